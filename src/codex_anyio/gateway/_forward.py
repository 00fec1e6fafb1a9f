"""Forwarding: every model call goes on to an upstream Responses endpoint.

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

The HTTP client is ``_upstream.py`` (h11 on AnyIO streams, asyncio and Trio alike; why not
httpcore is said there). It reads no proxy environment variables: the upstream named is the
one reached.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Any, Final
from urllib.parse import urlsplit

from .._json import dumps
from .._redact import redact_text, redact_url
from ._answerer import PolicyAnswerer
from ._events import FLUSH, DropConnection, PlainResponse, SseEvent, StreamStart
from ._request import ModelRequest
from ._upstream import UpstreamError, UpstreamPool, UpstreamTimeout

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
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"upstream must be an http:// or https:// URL, not {redact_url(upstream)!r}"
            )
        self.upstream = upstream.rstrip("/")
        self._shown = redact_url(self.upstream)
        self._scheme = parts.scheme
        netloc = parts.netloc.rsplit("@", 1)[-1]
        self._host_header = netloc
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"upstream has a bad port: {redact_url(upstream)!r}") from None
        self._address = (parts.hostname or "", port or (443 if parts.scheme == "https" else 80))
        self._base_path = parts.path.rstrip("/")
        self._headers = {name.lower(): value for name, value in (headers or {}).items()}
        self._timeout = timeout
        self._logprobs = logprobs
        self._pool: UpstreamPool | None = None

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        # No limit on connections: each carries one of the runtimes' streams, which they
        # bound themselves; a limit would only make a busy batch wait here.
        host, port = self._address
        async with UpstreamPool(
            self._scheme, host, port, keepalive=KEEPALIVE_CONNECTIONS, expiry=KEEPALIVE_EXPIRY
        ) as pool:
            self._pool = pool
            try:
                yield
            finally:
                self._pool = None

    def running(self) -> Any:
        return self._run()

    def answer(self, request: ModelRequest) -> AsyncGenerator[Any, None]:
        return self._forward(request)  # already one async generator: no wrapper per event

    def _target(self, path: str) -> str:
        """The upstream's request target: its base path, then what followed the gateway's
        ``/v1`` (``/v1/responses`` to ``https://host/api/v1`` is ``/api/v1/responses``)."""
        rest = path[3:] if path == "/v1" or path.startswith(("/v1/", "/v1?")) else path
        target = self._base_path + rest
        return target if target.startswith("/") else "/" + target

    def _outgoing(self, request: ModelRequest) -> tuple[list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
        headers.update(self._headers)
        body = request.raw_body
        if self._logprobs and request.is_responses_call and isinstance(request.body, dict):
            body = dumps(_with_logprobs(request.body))
        # Sent exactly as given: the Host and the body's length are ours.
        framing = [("host", self._host_header), ("content-length", str(len(body)))]
        return framing + list(headers.items()), body

    async def _forward(self, request: ModelRequest) -> AsyncGenerator[Any, None]:
        pool = self._pool
        assert pool is not None, "the gateway is not running"
        headers, body = self._outgoing(request)
        started = False
        try:
            answer = await pool.request(
                request.method,
                self._target(request.path),
                headers,
                body,
                connect_timeout=min(self._timeout, CONNECT_TIMEOUT),
                read_timeout=self._timeout,
            )
            passed = tuple((k, v) for k, v in answer.headers if k.lower() not in _NOT_PASSED_BACK)
            content_type = next((v for k, v in answer.headers if k.lower() == "content-type"), "")
            # The answer's connection is closed here unless its body was read to the end (a
            # turn interrupted mid-stream, an error body cut short): never left to the GC.
            async with answer, aclosing(answer.chunks()) as stream:
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
                    if not answer.complete:  # the last goes out with the end of the body
                        yield FLUSH  # each upstream chunk goes on as it came: in one write
                if buffer.strip():  # an unterminated last event: pass it on as it is
                    yield SseEvent(buffer.decode("utf-8", "replace"))
        except UpstreamTimeout as exc:
            what = f"the upstream {self._shown} did not answer in time ({exc})"
            if started:
                raise DropConnection(what) from None
            yield _fault(504, "upstream_timeout", what)
        except UpstreamError as exc:
            what = redact_text(f"the upstream {self._shown} failed: {exc}")
            if started:
                raise DropConnection(what) from None
            yield _fault(502, "upstream_unreachable", what)
