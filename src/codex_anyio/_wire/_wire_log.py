"""The opt-in wire log: every JSON-RPC line in and out, at DEBUG on ``codex_anyio.wire``.

It is a transport wrapper, put between the connection and its transport only when the log is
on (``CodexConfig(wire_log=True)`` or ``CODEX_ANYIO_WIRE_LOG=1``, checked once when the client
starts), so the reader and writer pay nothing when it is off.

Secrets never reach the log (see ``_redact.py`` for exactly what is hidden): values under keys
that name a credential, every value of a header map, and credentials inside any string (a
command's ``GITHUB_TOKEN=...``, URL userinfo, bearer tokens, known key formats) are replaced by
``[REDACTED]``; token *counts* (``inputTokens``: numbers) are kept. A message nested deeper
than ``_redact.MAX_DEPTH`` is logged with its deeper content elided, and a line the log cannot
render at all is logged as a placeholder: the log never fails the connection it watches.
"""

from __future__ import annotations

import logging
import os
from typing import Final

from .. import _json
from .._redact import REDACTED, redact, redact_text
from ._transport import Transport, abort_transport

__all__ = [
    "REDACTED",
    "WIRE_LOG_ENV",
    "WireLogTransport",
    "redact",
    "redact_line",
    "wire_log_enabled",
    "wire_logger",
]

wire_logger = logging.getLogger("codex_anyio.wire")

WIRE_LOG_ENV: Final = "CODEX_ANYIO_WIRE_LOG"
"""Set to ``1`` (or ``true``, ``yes``, ``on``) to turn the wire log on for every client."""

MAX_LOGGED_LINE: Final = 64 * 1024
"""Longer lines are logged cut to this many characters (a command's whole output can be MBs)."""


def wire_log_enabled(flag: bool) -> bool:
    """Whether a client that starts now logs its wire traffic."""
    if flag:
        return True
    return os.environ.get(WIRE_LOG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def redact_line(line: bytes) -> str:
    """One wire line as log text, secrets redacted; a line that is not JSON is scrubbed of
    anything that looks like a credential. Never raises: a line that cannot be rendered
    (whatever the reason) becomes a placeholder naming its size."""
    try:
        try:
            text = _json.dumps(redact(_json.loads(line))).decode()
        except ValueError:
            text = redact_text(line[: MAX_LOGGED_LINE * 2].decode("utf-8", "replace"))
            text = text.rstrip("\n")
    except Exception as exc:
        return f"[a {len(line)}-byte line the wire log could not render: {type(exc).__name__}]"
    if len(text) > MAX_LOGGED_LINE:
        text = f"{text[:MAX_LOGGED_LINE]}... ({len(text)} characters)"
    return text


class WireLogTransport:
    """A :class:`Transport` that logs each line on its way through."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self._partial = b""

    async def send(self, data: bytes) -> None:
        if wire_logger.isEnabledFor(logging.DEBUG):
            for line in data.splitlines():
                if line:
                    wire_logger.debug("-> %s", redact_line(line))
        await self._inner.send(data)

    async def receive(self) -> bytes:
        chunk = await self._inner.receive()
        if wire_logger.isEnabledFor(logging.DEBUG):
            *lines, rest = (self._partial + chunk).split(b"\n")
            # Bound what is held for an over-long line: its head is enough for a log.
            self._partial = rest[: MAX_LOGGED_LINE * 4]
            for line in lines:
                if line.strip():
                    wire_logger.debug("<- %s", redact_line(line))
        return chunk

    async def exit_info(self) -> tuple[int | None, str]:
        return await self._inner.exit_info()

    def stderr_tail(self) -> str:
        return self._inner.stderr_tail()

    def end_reason(self) -> str | None:
        return self._inner.end_reason()

    def abort(self) -> None:
        abort_transport(self._inner)

    async def aclose(self) -> None:
        await self._inner.aclose()
