"""Fail fast when the runtime has no credentials.

Without a login, ``codex app-server`` still accepts a turn and then retries the model request
(``Reconnecting... 1/5`` ... ``5/5``, then the stream retries) for a minute or more before the
turn fails. ``account/read`` answers at once whether the configured provider needs an OpenAI
login (``requiresOpenaiAuth``) and whether there is one (``account``). The check runs when a
thread is started, resumed or forked, at most once per client once it has passed, and never
blocks on an answer it cannot get: an error or :data:`CHECK_TIMEOUT` lets the call proceed
(and turns the check off for that client).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import anyio

from .._exceptions import CodexError, CredentialsMissingError

if TYPE_CHECKING:
    from .._rpc._connection import CodexClient

__all__ = ["CHECK_TIMEOUT", "CredentialsCheck"]

logger = logging.getLogger("codex_anyio")

CHECK_TIMEOUT: Final = 10.0
"""Upper bound on the ``account/read`` request of the check (it is local: about 1 ms)."""


class CredentialsCheck:
    """Remembers a passed check; a failed one is repeated (the user may log in meanwhile)."""

    def __init__(self, *, enabled: bool) -> None:
        self._enabled = enabled
        self._passed = not enabled

    def reset(self) -> None:
        """After a logout the next thread start checks again."""
        self._passed = not self._enabled

    async def ensure(self, client: CodexClient) -> None:
        """:raises CredentialsMissingError: if the runtime clearly has no usable login."""
        if self._passed:
            return
        try:
            with anyio.fail_after(CHECK_TIMEOUT):
                result = await client.request("account/read", {})
        except (CodexError, TimeoutError) as exc:
            # A runtime that cannot answer (an older or fake one) is not checked again.
            logger.debug("credentials check skipped: %r", exc)
            self._passed = True
            return
        if (
            isinstance(result, dict)
            and result.get("requiresOpenaiAuth")
            and not result.get("account")
        ):
            raise CredentialsMissingError
        self._passed = True
