"""``ScriptedModel``: the Responses API subset the Codex runtime uses, answered from a script.

The runtime, pointed at ``base_url`` by a custom model provider, POSTs each model request to
``/v1/responses`` and reads Server-Sent Events back. This server answers every such request
with the next scripted :class:`Reply`, and records what the runtime sent, so a test can drive
the real runtime through messages, tool calls, approvals and failures offline, and assert on
what reached the "model" (a tool's ``function_call_output``, a stream dropped after an
interrupt).

The HTTP layer is deliberately small: one request per connection (``Connection: close``),
bodies by ``Content-Length`` or chunked, which is what the runtime's client sends. It runs on
AnyIO, so it works in asyncio and Trio tests alike, inside the caller's event loop.
"""

from __future__ import annotations

import inspect
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, TypeAlias

import anyio
import anyio.abc
import attrs

from .._groups import exit_unwrapped

__all__ = [
    "Exchange",
    "RecordedRequest",
    "Reply",
    "ScriptExhaustedError",
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

_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):06d}"


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
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_input_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_output_tokens},
        "total_tokens": input_tokens + output_tokens if total_tokens is None else total_tokens,
    }


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
    if deltas is None:
        words = text.split(" ")
        pieces = tuple(w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words))
    elif isinstance(deltas, int):
        size = max(1, -(-len(text) // max(1, deltas)))
        pieces = tuple(text[i : i + size] for i in range(0, len(text), size))
    else:
        pieces = tuple(deltas)
        if "".join(pieces) != text:
            raise ValueError("the deltas must add up to the text")
    return Reply(outputs=(_Message(text, tuple(p for p in pieces if p), delay),), usage=usage)


def function_call(
    name: str,
    arguments: Any = None,
    *,
    call_id: str | None = None,
    usage: Mapping[str, Any] | None = None,
) -> Reply:
    """The model calls tool ``name`` (a dynamic tool, or a built-in one) with ``arguments``."""
    encoded = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return Reply(outputs=(_FunctionCall(name, encoded, call_id or _new_id("call")),), usage=usage)


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


@attrs.frozen
class RecordedRequest:
    """One HTTP request the runtime made."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    """The parsed JSON body (None if empty or not JSON)."""

    def function_call_outputs(self) -> list[dict[str, Any]]:
        """The ``function_call_output`` items of this request's ``input``."""
        items = self.body.get("input", []) if isinstance(self.body, dict) else []
        return [i for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"]


@attrs.define
class Exchange:
    """A request and how its scripted reply went."""

    request: RecordedRequest
    reply: Reply | None
    finished: anyio.Event = attrs.field(factory=anyio.Event)
    """Set when the server is done with this exchange, whatever the outcome."""
    abandoned: anyio.Event = attrs.field(factory=anyio.Event)
    """Set if the client closed the connection before the reply was complete (an
    interrupted turn drops its stream this way)."""


class ScriptExhaustedError(AssertionError):
    """The runtime made more model requests than the script had replies for."""


Script: TypeAlias = "Sequence[Reply] | Callable[[RecordedRequest], Reply | Awaitable[Reply]]"


# -- the server --------------------------------------------------------------------------------


class _Connection:
    """Buffered reading of one HTTP connection."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _fill(self) -> None:
        chunk = await self.stream.receive()
        self.buffer += chunk

    async def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            await self._fill()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    async def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    async def read_request(self) -> RecordedRequest:
        head = await self.read_until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.read_until(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.read_until(b"\r\n")
                    break
                body += await self.read_exactly(size)
                await self.read_until(b"\r\n")
        else:
            body = await self.read_exactly(int(headers.get("content-length", "0")))
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        return RecordedRequest(method, path, headers, parsed)


def _header_lines(headers: tuple[tuple[str, str], ...]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n".encode()


class _Dropped(Exception):
    """The scripted reply drops the connection here."""


class ScriptedModel:
    """A scripted Responses API on ``127.0.0.1`` (an ephemeral port) for the Codex runtime.

    ``async with ScriptedModel([message("Hi!")]) as model:`` then point the runtime at
    ``model.base_url`` (``testing.write_codex_home`` does). The script is a list (one reply
    per model request, in order) or a function of the :class:`RecordedRequest` returning a
    reply. Leaving the block raises :class:`ScriptExhaustedError` if the runtime asked for
    more replies than a list script had.
    """

    def __init__(self, script: Script) -> None:
        self._script = script
        self._queue: list[Reply] = list(script) if not callable(script) else []
        self.exchanges: list[Exchange] = []
        self.exhausted = 0
        self._arrived = anyio.Event()
        self._port: int | None = None
        self._cm: Any = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the provider ``base_url`` for the runtime."""
        if self._port is None:
            raise RuntimeError("the ScriptedModel is not running")
        return f"http://127.0.0.1:{self._port}/v1"

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
        self._cm = self._serve()
        await self._cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        result = await exit_unwrapped(self._cm, exc_type, exc, tb)
        if exc is None and self.exhausted:
            raise ScriptExhaustedError(
                f"the runtime made {len(self.exchanges)} model requests but the script had "
                f"{len(self.exchanges) - self.exhausted} replies"
            )
        return result

    @asynccontextmanager
    async def _serve(self) -> AsyncIterator[None]:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self._port = listener.extra(anyio.abc.SocketAttribute.local_port)
        try:
            async with listener, anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, self._handle, tg)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._port = None

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

    async def _handle(self, stream: anyio.abc.ByteStream) -> None:
        async with stream:
            connection = _Connection(stream)
            try:
                request = await connection.read_request()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ValueError):
                return
            if request.method != "POST" or not request.path.rstrip("/").endswith("/responses"):
                exchange = Exchange(request, None)
                self._record(exchange)
                await self._send_plain(stream, 404, f"no scripted route for {request.path}")
                exchange.finished.set()
                return
            answer = await self._next_reply(request)
            exchange = Exchange(request, answer)
            self._record(exchange)
            try:
                if answer is None:
                    self.exhausted += 1
                    await self._send_plain(stream, 500, "the ScriptedModel's script is exhausted")
                elif answer.status != 200:
                    await self._send_plain(stream, answer.status, answer.body, answer.headers)
                else:
                    await self._stream_reply(stream, connection, answer, exchange)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                exchange.abandoned.set()
            except _Dropped:
                pass
            finally:
                exchange.finished.set()

    def _record(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)
        self._arrived.set()
        self._arrived = anyio.Event()

    async def _send_plain(
        self,
        stream: anyio.abc.ByteStream,
        status: int,
        body: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        data = body.encode()
        head = (
            f"HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\n"
            f"{_header_lines(headers)}"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        await stream.send(head.encode() + data)

    async def _stream_reply(
        self,
        stream: anyio.abc.ByteStream,
        connection: _Connection,
        answer: Reply,
        exchange: Exchange,
    ) -> None:
        sent = 0

        async def emit(event: str, data: dict[str, Any]) -> None:
            nonlocal sent
            if answer.drop_after is not None and sent >= answer.drop_after:
                raise _Dropped
            await stream.send(_sse(event, data))
            sent += 1

        await stream.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            + _header_lines(answer.headers).encode()
            + b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
        )
        response_id = _new_id("resp")
        await emit("response.created", {"response": {"id": response_id}})
        for index, output in enumerate(answer.outputs):
            if isinstance(output, _Message):
                item_id = _new_id("msg")
                item = {"type": "message", "role": "assistant", "id": item_id}
                await emit(
                    "response.output_item.added",
                    {"output_index": index, "item": {**item, "content": []}},
                )
                for n, piece in enumerate(output.deltas):
                    if n and output.delay:
                        await anyio.sleep(output.delay)
                    await emit(
                        "response.output_text.delta",
                        {
                            "item_id": item_id,
                            "output_index": index,
                            "content_index": 0,
                            "delta": piece,
                        },
                    )
                done = {**item, "content": [{"type": "output_text", "text": output.text}]}
                await emit("response.output_item.done", {"output_index": index, "item": done})
            else:
                item = {
                    "type": "function_call",
                    "id": _new_id("fc"),
                    "call_id": output.call_id,
                    "name": output.name,
                    "arguments": output.arguments,
                }
                await emit("response.output_item.added", {"output_index": index, "item": item})
                await emit("response.output_item.done", {"output_index": index, "item": item})
        if answer.fail is not None:
            error = {"code": "server_error", "message": answer.fail}
            await emit("response.failed", {"response": {"id": response_id, "error": error}})
            return
        if answer.stall:
            # Nothing more: wait for the client to go away (an interrupt drops the stream).
            try:
                while True:
                    await connection.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                exchange.abandoned.set()
            return
        usage = answer.usage
        if usage is None:
            usage = {
                "input_tokens": 10,
                "input_tokens_details": None,
                "output_tokens": 5,
                "output_tokens_details": None,
                "total_tokens": 15,
            }
        await emit("response.completed", {"response": {"id": response_id, "usage": dict(usage)}})
