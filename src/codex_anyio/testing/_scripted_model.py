"""``ScriptedModel``: the Responses API subset the Codex runtime uses, answered from a script.

The runtime, pointed at ``base_url`` by a custom model provider, POSTs each model request to
``/v1/responses`` and reads Server-Sent Events back. The scripted model answers every such
request with the next scripted :class:`Reply`, and records what the runtime sent, so a test
can drive the real runtime through messages, tool calls, approvals and failures offline, and
assert on what reached the "model" (a tool's ``function_call_output``, a stream dropped after
an interrupt).

It is a policy of a :class:`~codex_anyio.gateway.ModelGateway` (one HTTP server in the
project): the gateway serves HTTP and joins each call to its thread and turn, this module
turns a script into response events. ``model.gateway`` is that gateway, so
``AsyncCodex(gateway=model.gateway)`` gets ``TurnResult.model_calls`` too. It runs on AnyIO,
inside the caller's event loop, on asyncio and Trio alike.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from datetime import datetime
from types import TracebackType
from typing import Any, TypeAlias

import anyio
import attrs

from ..gateway._events import (
    DropConnection,
    PlainResponse,
    ResponseEvent,
    StreamStart,
    completed_event,
    created_event,
    failed_event,
    function_call_events,
    message_events,
    new_id,
    split_text,
    usage,
)
from ..gateway._exchange import Exchange as ModelCall
from ..gateway._gateway import ModelGateway
from ..gateway._request import ModelRequest

__all__ = [
    "Exchange",
    "RecordedRequest",
    "Reply",
    "ScriptExhaustedError",
    "ScriptedExchange",
    "ScriptedModel",
    "exec_command",
    "failed",
    "function_call",
    "http_error",
    "message",
    "model_usage",
    "reply",
    "request_user_input",
    "stall",
    "usage_limit_reached",
]

# -- the script ------------------------------------------------------------------------------


@attrs.frozen
class _Message:
    text: str
    deltas: tuple[str, ...]
    delay: float


@attrs.frozen
class _FunctionCall:
    name: str
    arguments: str
    call_id: str


_Output = _Message | _FunctionCall


@attrs.frozen(kw_only=True)
class Reply:
    """One scripted answer to one model request. Build it with the functions below.

    :param outputs: output items, streamed in order (messages, function calls).
    :param status: HTTP status; anything but 200 answers with ``body`` and no stream.
    :param body: the error body for a non-200 status.
    :param fail: end the stream with ``response.failed`` carrying this message.
    :param stall: after the outputs, send nothing more until the client goes away.
    :param drop_after: close the connection abruptly after this many SSE events.
    :param usage: the ``usage`` object of ``response.completed``, in the Responses API's
        shape (:func:`model_usage` builds one); None: 10 input and 5 output tokens.
    :param headers: extra HTTP response headers (the service's ``x-codex-*`` rate-limit
        headers, for instance), on an error reply and on a stream alike.
    """

    outputs: tuple[_Output, ...] = ()
    status: int = 200
    body: str = ""
    fail: str | None = None
    stall: bool = False
    drop_after: int | None = None
    usage: Mapping[str, Any] | None = None
    headers: tuple[tuple[str, str], ...] = ()


def model_usage(
    input_tokens: int,
    output_tokens: int,
    *,
    cached_input_tokens: int = 0,
    reasoning_output_tokens: int = 0,
    total_tokens: int | None = None,
) -> dict[str, Any]:
    """A Responses API ``usage`` object (cached and reasoning tokens go in its details), for
    ``usage=`` of the reply functions. ``total_tokens`` defaults to input + output, which is
    how the service counts it."""
    return usage(
        input_tokens,
        output_tokens,
        cached_input_tokens=cached_input_tokens,
        reasoning_output_tokens=reasoning_output_tokens,
        total_tokens=total_tokens,
    )


def message(
    text: str,
    *,
    deltas: int | Sequence[str] | None = None,
    delay: float = 0.0,
    usage: Mapping[str, Any] | None = None,
) -> Reply:
    """An assistant message, streamed as text deltas.

    :param deltas: how to split it: a number of roughly equal pieces, explicit pieces, or
        None for one delta per word.
    :param delay: seconds between deltas (a slow model, for streaming and interrupt tests).
    :param usage: what the response reports it cost (see :func:`model_usage`).
    """
    return Reply(outputs=(_Message(text, split_text(text, deltas), delay),), usage=usage)


def function_call(
    name: str,
    arguments: Any = None,
    *,
    call_id: str | None = None,
    usage: Mapping[str, Any] | None = None,
) -> Reply:
    """The model calls tool ``name`` (a dynamic tool, or a built-in one) with ``arguments``."""
    encoded = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return Reply(outputs=(_FunctionCall(name, encoded, call_id or new_id("call")),), usage=usage)


def exec_command(
    cmd: str,
    *,
    escalate: bool = False,
    justification: str = "scripted",
    call_id: str | None = None,
    usage: Mapping[str, Any] | None = None,
) -> Reply:
    """The model runs a shell command; ``escalate`` asks to leave the sandbox, which makes
    the runtime request approval under ``approval_policy = "on-request"``."""
    arguments: dict[str, Any] = {"cmd": cmd}
    if escalate:
        arguments["sandbox_permissions"] = "require_escalated"
        arguments["justification"] = justification
    return function_call("exec_command", arguments, call_id=call_id, usage=usage)


def request_user_input(questions: Sequence[dict[str, Any]], *, call_id: str | None = None) -> Reply:
    """The model asks the user questions (the runtime's ``request_user_input`` tool)."""
    return function_call("request_user_input", {"questions": list(questions)}, call_id=call_id)


def reply(
    *parts: Reply,
    usage: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """Several output items in one answer, e.g. ``reply(message("Let me check."),
    function_call("lookup", {...}))``. Its ``usage`` is ``usage``, else the last part's;
    ``headers`` are extra HTTP response headers (e.g. the ``x-codex-*`` rate limits)."""
    if usage is None:
        usage = next((p.usage for p in reversed(parts) if p.usage is not None), None)
    return Reply(
        outputs=tuple(o for part in parts for o in part.outputs),
        usage=usage,
        headers=tuple((headers or {}).items()),
    )


def failed(error: str = "scripted failure") -> Reply:
    """A stream that ends with ``response.failed``."""
    return Reply(fail=error)


def http_error(status: int, body: str = "", *, headers: Mapping[str, str] | None = None) -> Reply:
    """An HTTP error instead of a stream (429, 500, ...), with extra ``headers`` if given."""
    return Reply(
        status=status,
        body=body or json.dumps({"error": {"message": f"HTTP {status}"}}),
        headers=tuple((headers or {}).items()),
    )


def usage_limit_reached(
    resets_at: datetime | int,
    *,
    plan_type: str = "plus",
    used_percent: float = 100.0,
    window_minutes: int = 300,
) -> Reply:
    """The service's answer once the account's usage limit is reached: HTTP 429 with an
    ``{"error": {"type": "usage_limit_reached", "plan_type", "resets_at"}}`` body and the
    ``x-codex-primary-*`` rate-limit headers, which is what the runtime parses (codex-rs
    ``api_bridge.rs``, ``rate_limits.rs``). ``resets_at`` is an aware datetime or Unix seconds.
    """
    seconds = int(resets_at.timestamp()) if isinstance(resets_at, datetime) else int(resets_at)
    body = {"error": {"type": "usage_limit_reached", "plan_type": plan_type, "resets_at": seconds}}
    headers = {
        "x-codex-primary-used-percent": f"{used_percent:g}",
        "x-codex-primary-window-minutes": str(window_minutes),
        "x-codex-primary-reset-at": str(seconds),
    }
    return http_error(429, json.dumps(body), headers=headers)


def stall(*before: Reply) -> Reply:
    """Stream ``before`` (if any), then nothing, until the client gives up or interrupts."""
    return attrs.evolve(reply(*before), stall=True)


# -- what was seen -----------------------------------------------------------------------------

RecordedRequest = ModelRequest
"""One HTTP request the runtime made: the gateway's :class:`~codex_anyio.gateway.ModelRequest`
(method, path, headers, parsed JSON ``body``, ``function_call_outputs()``, and the joined
thread, turn and call index)."""


@attrs.define
class ScriptedExchange:
    """A request and how its scripted reply went."""

    request: ModelRequest
    reply: Reply | None
    finished: anyio.Event = attrs.field(factory=anyio.Event)
    """Set when the server is done with this exchange, whatever the outcome."""
    abandoned: anyio.Event = attrs.field(factory=anyio.Event)
    """Set if the client closed the connection before the reply was complete (an
    interrupted turn drops its stream this way)."""
    call: ModelCall | None = None
    """The gateway's record of the call, once it is finished."""


Exchange = ScriptedExchange
"""The former name of :class:`ScriptedExchange` (not the gateway's
:class:`~codex_anyio.gateway.Exchange`, which a scripted exchange holds as ``call``)."""


class ScriptExhaustedError(AssertionError):
    """The runtime made more model requests than the script had replies for."""


Script: TypeAlias = "Sequence[Reply] | Callable[[RecordedRequest], Reply | Awaitable[Reply]]"


# -- the policy --------------------------------------------------------------------------------


async def _scripted_events(answer: Reply) -> AsyncGenerator[ResponseEvent, None]:
    """The response events of a 200 reply, paced and cut off as the reply says."""
    sent = 0

    def event(data: dict[str, Any]) -> dict[str, Any]:
        nonlocal sent
        if answer.drop_after is not None and sent >= answer.drop_after:
            raise DropConnection
        sent += 1
        return data

    yield StreamStart(answer.headers)
    response_id = new_id("resp")
    yield event(created_event(response_id))
    for index, output in enumerate(answer.outputs):
        if isinstance(output, _Message):
            events = message_events(output.text, deltas=output.deltas, output_index=index)
            for n, data in enumerate(events):
                if output.delay and data["type"] == "response.output_text.delta" and n > 1:
                    await anyio.sleep(output.delay)
                yield event(data)
        else:
            for data in function_call_events(
                output.name, output.arguments, call_id=output.call_id, output_index=index
            ):
                yield event(data)
    if answer.fail is not None:
        yield event(failed_event(response_id, answer.fail))
        return
    if answer.stall:
        # Nothing more: the gateway ends this when the client goes away (an interrupt drops
        # the stream).
        await anyio.sleep_forever()
    yield event(completed_event(response_id, answer.usage))


class ScriptedModel:
    """A scripted Responses API on ``127.0.0.1`` (an ephemeral port) for the Codex runtime.

    ``async with ScriptedModel([message("Hi!")]) as model:`` then point the runtime at
    ``model.base_url`` (``testing.write_codex_home`` does), or pass ``gateway=model.gateway``
    to the client. The script is a list (one reply per model request, in order) or a function
    of the :class:`RecordedRequest` returning a reply. Leaving the block raises
    :class:`ScriptExhaustedError` if the runtime asked for more replies than a list script
    had.
    """

    def __init__(self, script: Script) -> None:
        self._script = script
        self._queue: list[Reply] = list(script) if not callable(script) else []
        self.exchanges: list[ScriptedExchange] = []
        self.exhausted = 0
        self._arrived = anyio.Event()
        self._open: dict[int, ScriptedExchange] = {}
        self.gateway = ModelGateway(
            self._answer,
            provider="mock",
            request_max_retries=0,
            stream_max_retries=0,
            on_exchange=self._finished,
        )
        """The gateway serving the script (``AsyncCodex(gateway=model.gateway)``)."""

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the provider ``base_url`` for the runtime."""
        if not self.gateway.running:
            raise RuntimeError("the ScriptedModel is not running")
        return self.gateway.base_url

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order."""
        return [exchange.request for exchange in self.exchanges]

    def function_call_outputs(self) -> list[dict[str, Any]]:
        """Every ``function_call_output`` the runtime sent back, across all requests."""
        seen: dict[str, dict[str, Any]] = {}
        for request in self.requests:
            for item in request.function_call_outputs():
                seen.setdefault(str(item.get("call_id")), item)
        return list(seen.values())

    async def wait_for_requests(self, count: int) -> list[RecordedRequest]:
        """Wait until at least ``count`` requests have arrived."""
        while len(self.exchanges) < count:
            await self._arrived.wait()
        return self.requests

    async def __aenter__(self) -> ScriptedModel:
        await self.gateway.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        result = await self.gateway.__aexit__(exc_type, exc, tb)
        if exc is None and self.exhausted:
            raise ScriptExhaustedError(
                f"the runtime made {len(self.exchanges)} model requests but the script had "
                f"{len(self.exchanges) - self.exhausted} replies"
            )
        return result

    async def _next_reply(self, request: RecordedRequest) -> Reply | None:
        if callable(self._script):
            answer = self._script(request)
            if inspect.isawaitable(answer):
                answer = await answer
            assert isinstance(answer, Reply), f"the script returned {answer!r}, not a Reply"
            return answer
        if not self._queue:
            return None
        return self._queue.pop(0)

    def _record(self, exchange: ScriptedExchange) -> None:
        self.exchanges.append(exchange)
        self._open[id(exchange.request)] = exchange
        self._arrived.set()
        self._arrived = anyio.Event()

    def _finished(self, call: ModelCall) -> None:
        exchange = self._open.pop(id(call.request), None)
        if exchange is None:
            return
        exchange.call = call
        if call.abandoned:
            exchange.abandoned.set()
        exchange.finished.set()

    async def _answer(self, request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        if not request.is_responses_call:
            self._record(ScriptedExchange(request, None))
            yield PlainResponse(404, f"no scripted route for {request.path}")
            return
        answer = await self._next_reply(request)
        self._record(ScriptedExchange(request, answer))
        if answer is None:
            self.exhausted += 1
            yield PlainResponse(500, "the ScriptedModel's script is exhausted")
        elif answer.status != 200:
            yield PlainResponse(answer.status, answer.body, answer.headers)
        else:
            async with aclosing(_scripted_events(answer)) as events:
                async for event in events:
                    yield event
