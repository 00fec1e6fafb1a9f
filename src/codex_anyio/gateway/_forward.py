"""Forwarding: every model call goes on to an upstream Responses endpoint, through httpcore.

The request goes upstream as the runtime sent it (its credentials included, hop-by-hop
headers dropped, ``upstream_headers`` added), and the answer comes back event by event,
each Server-Sent Event passed on byte for byte, so the runtime sees what the service sent:
a 429 with the usage-limit body and rate-limit headers, a 5xx, a malformed stream. What the
service could not have sent is mapped to what the runtime makes of a failing service:
an upstream that refuses the connection or breaks the protocol before answering is a 502,
one that does not answer in time a 504 (both retried by the runtime like any 5xx), and one
that fails mid-stream breaks the runtime's stream off (as a dropped connection would). Each
such fault is recorded as the exchange's ``error``, credentials hidden. When the runtime
drops its stream (an interrupted turn), the upstream stream is closed at once.

httpcore (the HTTP transport under httpx) is imported when the gateway starts; it runs on
asyncio and Trio. It is used directly rather than through httpx's client, which cost about
another millisecond of CPU per call here (its request and response models, header
normalisation, redirect and auth machinery: none of it needed to pass a request on). It reads
no proxy environment variables: the upstream named is the one reached.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import urlsplit

from .._json import dumps
from .._redact import redact_text, redact_url
from ._answerer import PolicyAnswerer
from ._events import FLUSH, DropConnection, PlainResponse, SseEvent, StreamStart
from ._request import ModelRequest

if TYPE_CHECKING:
    import httpcore

__all__ = ["CONNECT_TIMEOUT", "LOGPROBS_INCLUDE", "ForwardAnswerer"]

CONNECT_TIMEOUT: Final = 10.0
"""Seconds to wait for the upstream to accept the connection (at most ``upstream_timeout``)."""

MAX_ERROR_BODY: Final = 1024 * 1024
"""Most bytes of a non-stream upstream answer passed on (an error body is a few hundred)."""

KEEPALIVE_CONNECTIONS: Final = 64
"""Idle upstream connections kept open for the next call (one per concurrent stream, up to
this many; httpx's default is 20)."""

KEEPALIVE_EXPIRY: Final = 5.0
"""Seconds an idle upstream connection is kept (httpx's default)."""

MAX_EVENT_BYTES: Final = 16 * 1024 * 1024
"""Largest single upstream event accepted; beyond it the stream is broken off."""

LOGPROBS_INCLUDE: Final = "message.output_text.logprobs"
"""What ``logprobs=True`` adds to a request's ``include``."""

_HOP_BY_HOP: Final = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "accept-encoding",
    )
)
_NOT_PASSED_BACK: Final = _HOP_BY_HOP | {
    "cache-control",
    "content-encoding",
    "content-type",
    "date",
    "server",
}
"""Upstream response headers the gateway sets itself (or that describe the upstream's own
connection)."""


def _with_logprobs(body: Any) -> Any:
    include = list(body.get("include") or [])
    if LOGPROBS_INCLUDE not in include:
        include.append(LOGPROBS_INCLUDE)
    return {**body, "include": include}


def _sse_blocks(buffer: bytearray, chunk: bytes) -> list[str]:
    """Add ``chunk`` to ``buffer`` and take every complete event out of it."""
    buffer += chunk.replace(b"\r\n", b"\n")
    blocks: list[str] = []
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            break
        block = bytes(buffer[:end])
        del buffer[: end + 2]
        if block.strip():
            blocks.append(block.decode("utf-8", "replace"))
    if len(buffer) > MAX_EVENT_BYTES:
        raise DropConnection(f"an upstream event over {MAX_EVENT_BYTES} bytes")
    return blocks


def _require_httpcore() -> None:
    """Forwarding is the one part of the gateway that needs the ``gateway`` extra: say so
    when the gateway is made, not as a bare ``ModuleNotFoundError`` once it starts."""
    try:
        import httpcore  # noqa: F401
    except ImportError:
        raise ImportError(
            "forwarding to an upstream (ModelGateway(upstream=...), batch --gateway) needs "
            "httpcore: pip install 'codex-anyio[gateway]'"
        ) from None


def _fault(status: int, kind: str, message: str) -> PlainResponse:
    body = {"error": {"type": kind, "message": message}}
    return PlainResponse(status, dumps(body), error=message)


class ForwardAnswerer(PolicyAnswerer):
    """Answers by forwarding to ``upstream`` (see the module docstring)."""

    marks_bursts = True

    def __init__(
        self,
        upstream: str,
        *,
        headers: Mapping[str, str] | None,
        timeout: float,
        logprobs: bool,
    ) -> None:
        super().__init__(self._forward)
        _require_httpcore()
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"upstream must be an http:// or https:// URL, not {redact_url(upstream)!r}"
            )
        self.upstream = upstream.rstrip("/")
        self._shown = redact_url(self.upstream)
        self._headers = {name.lower(): value for name, value in (headers or {}).items()}
        self._timeout = timeout
        self._logprobs = logprobs
        self._pool: httpcore.AsyncConnectionPool | None = None

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        import httpcore

        # No limit on connections: each carries one of the runtimes' streams, which they
        # bound themselves; a pool limit would only make a busy batch wait here.
        async with httpcore.AsyncConnectionPool(
            max_connections=None,
            max_keepalive_connections=KEEPALIVE_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_EXPIRY,
        ) as pool:
            self._pool = pool
            try:
                yield
            finally:
                self._pool = None

    def running(self) -> Any:
        return self._run()

    def _url(self, path: str) -> str:
        rest = path[3:] if path == "/v1" or path.startswith(("/v1/", "/v1?")) else path
        return self.upstream + rest

    def _outgoing(self, request: ModelRequest) -> tuple[list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
        headers.update(self._headers)
        body = request.raw_body
        if self._logprobs and request.is_responses_call and isinstance(request.body, dict):
            body = dumps(_with_logprobs(request.body))
        # httpcore sends exactly the headers given: the Host and the body's length are ours.
        host = urlsplit(self.upstream).netloc.rsplit("@", 1)[-1]
        framing = [("host", host), ("content-length", str(len(body)))]
        return framing + list(headers.items()), body

    async def _forward(self, request: ModelRequest) -> AsyncIterator[Any]:
        import httpcore

        pool = self._pool
        assert pool is not None, "the gateway is not running"
        headers, body = self._outgoing(request)
        connect = min(self._timeout, CONNECT_TIMEOUT)
        timeouts = {"connect": connect, "read": self._timeout, "write": self._timeout}
        timeouts["pool"] = self._timeout
        started = False
        try:
            async with pool.stream(
                request.method,
                self._url(request.path),
                headers=headers,
                content=body,
                extensions={"timeout": timeouts},
            ) as answer:
                decoded = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.headers]
                passed = tuple((k, v) for k, v in decoded if k.lower() not in _NOT_PASSED_BACK)
                content_type = next((v for k, v in decoded if k.lower() == "content-type"), "")
                # Closed here, not by the garbage collector: a turn interrupted mid-stream
                # (or an error body cut short) leaves httpcore's generators unfinished. It is
                # an async generator, typed by httpcore as a plain iterator.
                chunks = cast("AsyncGenerator[bytes, None]", answer.aiter_stream())
                async with aclosing(chunks) as stream:
                    if answer.status != 200 or "text/event-stream" not in content_type:
                        data = bytearray()
                        async for chunk in stream:
                            data += chunk
                            if len(data) >= MAX_ERROR_BODY:
                                break
                        yield PlainResponse(
                            answer.status,
                            bytes(data[:MAX_ERROR_BODY]),
                            passed,
                            content_type=content_type or "application/octet-stream",
                        )
                        return
                    started = True
                    yield StreamStart(passed)
                    buffer = bytearray()
                    async for chunk in stream:
                        for block in _sse_blocks(buffer, chunk):
                            yield SseEvent(block)
                        yield FLUSH  # each upstream chunk goes on as it came: in one write
                    if buffer.strip():  # an unterminated last event: pass it on as it is
                        yield SseEvent(buffer.decode("utf-8", "replace"))
        except httpcore.TimeoutException as exc:
            what = f"the upstream {self._shown} did not answer in time ({type(exc).__name__})"
            if started:
                raise DropConnection(what) from None
            yield _fault(504, "upstream_timeout", what)
        except _failures() as exc:
            what = redact_text(f"the upstream {self._shown} failed: {type(exc).__name__}: {exc}")
            if started:
                raise DropConnection(what) from None
            yield _fault(502, "upstream_unreachable", what)


def _failures() -> tuple[type[Exception], ...]:
    """What httpcore raises for an upstream that cannot be reached or breaks the protocol
    (looked up when one is raised: httpcore is imported only once a gateway starts)."""
    import httpcore

    return (
        httpcore.NetworkError,
        httpcore.ProtocolError,
        httpcore.ProxyError,
        httpcore.UnsupportedProtocol,
    )
