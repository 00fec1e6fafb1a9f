"""Login and account helpers: ``login_api_key``, ``login_chatgpt``,
``login_chatgpt_device_code``, ``logout``, with the official SDK's names and handles.

A browser or device-code login completes out of band: the runtime announces the outcome with
an ``account/login/completed`` notification. The handle subscribes to the global stream
*before* ``account/login/start`` is sent, so the outcome cannot slip past between the
response and the first ``wait()``; the subscription is released by ``wait()``, ``cancel()``
followed by ``wait()``, or ``aclose()``.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Final

import anyio

from .._protocol._generated import models as m
from .._protocol._generated.converter import converter

if TYPE_CHECKING:
    from .._rpc._connection import CodexClient
    from .._rpc._notifications import NotificationStream
    from ._credentials import CredentialsCheck

__all__ = [
    "AsyncChatgptLoginHandle",
    "AsyncDeviceCodeLoginHandle",
    "CodexAccountMixin",
    "LOGIN_COMPLETED",
    "LoginHandle",
]

LOGIN_COMPLETED: Final = "account/login/completed"
"""What a login waits for: never opted out (``CodexConfig.opt_out_notification_methods``)."""


class LoginHandle:
    """A login attempt in progress: ``await handle.wait()`` for its outcome, or cancel it."""

    def __init__(self, client: CodexClient, login_id: str, stream: NotificationStream) -> None:
        self._client = client
        self.login_id = login_id
        self._stream = stream
        self._outcome: m.AccountLoginCompletedNotification | None = None

    async def wait(self) -> m.AccountLoginCompletedNotification:
        """Wait for ``account/login/completed`` of this attempt (``success``, ``error``).

        :raises TransportClosedError: if the runtime exits first.
        """
        if self._outcome is not None:
            return self._outcome
        try:
            async for note in self._stream:
                if note.method != LOGIN_COMPLETED:
                    continue
                params: m.AccountLoginCompletedNotification = note.params
                if params.login_id in (None, self.login_id):
                    self._outcome = params
                    return params
        finally:
            self._stream.close()
        raise anyio.EndOfStream  # pragma: no cover - the global stream ends only with an error

    async def cancel(self) -> m.CancelLoginAccountResponse:
        """Cancel the attempt; ``wait()`` then returns its (unsuccessful) outcome."""
        return await self._client.account_login_cancel(login_id=self.login_id)

    async def aclose(self) -> None:
        """Stop listening for the outcome (the attempt itself goes on until cancelled)."""
        self._stream.close()

    async def __aenter__(self) -> LoginHandle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncChatgptLoginHandle(LoginHandle):
    """A browser login: open :attr:`auth_url`, then ``await wait()``."""

    def __init__(
        self,
        client: CodexClient,
        stream: NotificationStream,
        response: m.LoginAccountResponseChatgpt,
    ) -> None:
        super().__init__(client, response.login_id, stream)
        self.auth_url = response.auth_url


class AsyncDeviceCodeLoginHandle(LoginHandle):
    """A device-code login: show :attr:`verification_url` and :attr:`user_code`, then
    ``await wait()``."""

    def __init__(
        self,
        client: CodexClient,
        stream: NotificationStream,
        response: m.LoginAccountResponseChatgptDeviceCode,
    ) -> None:
        super().__init__(client, response.login_id, stream)
        self.verification_url = response.verification_url
        self.user_code = response.user_code


class CodexAccountMixin:
    """The account half of ``AsyncCodex``."""

    _credentials: CredentialsCheck

    @property
    def client(self) -> CodexClient:  # pragma: no cover - defined by AsyncCodex
        raise NotImplementedError

    async def login_api_key(self, api_key: str) -> None:
        """Sign in with an OpenAI API key; the runtime stores it in ``CODEX_HOME``."""
        await self.client.request("account/login/start", {"type": "apiKey", "apiKey": api_key})

    async def login_chatgpt(self) -> AsyncChatgptLoginHandle:
        """Start a browser login (the runtime listens on localhost for the redirect)."""
        stream, result = await self._start_login({"type": "chatgpt"})
        response = converter.structure(result, m.LoginAccountResponseChatgpt)
        return AsyncChatgptLoginHandle(self.client, stream, response)

    async def login_chatgpt_device_code(self) -> AsyncDeviceCodeLoginHandle:
        """Start a device-code login (for machines without a browser)."""
        stream, result = await self._start_login({"type": "chatgptDeviceCode"})
        response = converter.structure(result, m.LoginAccountResponseChatgptDeviceCode)
        return AsyncDeviceCodeLoginHandle(self.client, stream, response)

    async def logout(self) -> None:
        """Forget the stored credentials."""
        await self.client.account_logout()
        self._credentials.reset()

    async def _start_login(self, params: dict[str, str]) -> tuple[NotificationStream, object]:
        stream = self.client.subscribe()
        try:
            result = await self.client.request("account/login/start", params)
        except BaseException:
            stream.close()
            raise
        return stream, result
