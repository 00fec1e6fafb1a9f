"""Forwarding: every model call goes on to an upstream Responses endpoint, through httpx.

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

httpx is imported when the gateway starts; it runs on asyncio and Trio. It ignores proxy
environment variables (``trust_env=False``): the upstream named is the one reached.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from .._json import dumps
from .._redact import redact_text, redact_url
from ._answerer import PolicyAnswerer
from ._events import DropConnection, PlainResponse, ResponseEvent, SseEvent, StreamStart
from ._request import ModelRequest

if TYPE_CHECKING:
    import httpx

__all__ = ["CONNECT_TIMEOUT", "LOGPROBS_INCLUDE", "ForwardAnswerer"]

CONNECT_TIMEOUT: Final = 10.0
"""Seconds to wait for the upstream to accept the connection (at most ``upstream_timeout``)."""

MAX_ERROR_BODY: Final = 1024 * 1024
"""Most bytes of a non-stream upstream answer passed on (an error body is a few hundred)."""

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
        self._headers = {name.lower(): value for name, value in (headers or {}).items()}
        self._timeout = timeout
        self._logprobs = logprobs
        self._client: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        import httpx

        timeout = httpx.Timeout(self._timeout, connect=min(self._timeout, CONNECT_TIMEOUT))
        async with httpx.AsyncClient(
            timeout=timeout, trust_env=False, follow_redirects=False
        ) as client:
            self._client = client
            try:
                yield
            finally:
                self._client = None

    def running(self) -> Any:
        return self._run()

    def _url(self, path: str) -> str:
        rest = path[3:] if path == "/v1" or path.startswith(("/v1/", "/v1?")) else path
        return self.upstream + rest

    def _outgoing(self, request: ModelRequest) -> tuple[dict[str, str], bytes]:
        headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
        headers.update(self._headers)
        body = request.raw_body
        if self._logprobs and request.is_responses_call and isinstance(request.body, dict):
            body = dumps(_with_logprobs(request.body))
        return headers, body

    async def _forward(self, request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        import httpx

        client = self._client
        assert client is not None, "the gateway is not running"
        headers, body = self._outgoing(request)
        started = False
        try:
            async with client.stream(
                request.method, self._url(request.path), content=body, headers=headers
            ) as answer:
                passed = tuple(
                    (name, value)
                    for name, value in answer.headers.multi_items()
                    if name.lower() not in _NOT_PASSED_BACK
                )
                content_type = answer.headers.get("content-type", "")
                if answer.status_code != 200 or "text/event-stream" not in content_type:
                    data = bytearray()
                    async for chunk in answer.aiter_bytes():
                        data += chunk
                        if len(data) >= MAX_ERROR_BODY:
                            break
                    yield PlainResponse(
                        answer.status_code,
                        bytes(data[:MAX_ERROR_BODY]),
                        passed,
                        content_type=content_type or "application/octet-stream",
                    )
                    return
                started = True
                yield StreamStart(passed)
                buffer = bytearray()
                async for chunk in answer.aiter_bytes():
                    for block in _sse_blocks(buffer, chunk):
                        yield SseEvent(block)
                if buffer.strip():  # an unterminated last event: pass it on as it is
                    yield SseEvent(buffer.decode("utf-8", "replace"))
        except httpx.TimeoutException as exc:
            what = f"the upstream {self._shown} did not answer in time ({type(exc).__name__})"
            if started:
                raise DropConnection(what) from None
            yield _fault(504, "upstream_timeout", what)
        except httpx.HTTPError as exc:
            what = redact_text(f"the upstream {self._shown} failed: {type(exc).__name__}: {exc}")
            if started:
                raise DropConnection(what) from None
            yield _fault(502, "upstream_unreachable", what)
