"""The opt-in wire log: every JSON-RPC line in and out, at DEBUG on ``codex_anyio.wire``.

It is a transport wrapper, put between the connection and its transport only when the log is
on (``CodexConfig(wire_log=True)`` or ``CODEX_ANYIO_WIRE_LOG=1``, checked once when the client
starts), so the reader and writer pay nothing when it is off.

Secrets never reach the log: values under keys that name a credential (``token``,
``apiKey``/``api_key``, ``authorization``, ``password``, ``secret``, ``accessToken``,
``refreshToken``, ``idToken``, ``cookie``, and any key ending in one of those), every value of
a header map (a key ending in ``headers``), and, in any string, a bearer credential or an
``sk-`` style API key are replaced by ``[REDACTED]``. Token *counts* (``inputTokens``: numbers)
are kept.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Final

from . import _json
from ._transport import Transport, abort_transport

__all__ = ["WIRE_LOG_ENV", "WireLogTransport", "redact", "wire_log_enabled", "wire_logger"]

wire_logger = logging.getLogger("codex_anyio.wire")

WIRE_LOG_ENV: Final = "CODEX_ANYIO_WIRE_LOG"
"""Set to ``1`` (or ``true``, ``yes``, ``on``) to turn the wire log on for every client."""

REDACTED: Final = "[REDACTED]"

MAX_LOGGED_LINE: Final = 64 * 1024
"""Longer lines are logged cut to this many characters (a command's whole output can be MBs)."""

_SECRET_NAMES: Final = frozenset(
    {"token", "apikey", "authorization", "password", "passwd", "secret", "cookie", "setcookie"}
)
_SECRET_SUFFIXES: Final = (
    "token",
    "apikey",
    "secret",
    "password",
    "authorization",
    "cookie",
    "credential",
    "credentials",
)
_SECRET_IN_TEXT: Final = re.compile(
    r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}|\bsk-[A-Za-z0-9_-]{12,}"
)


def wire_log_enabled(flag: bool) -> bool:
    """Whether a client that starts now logs its wire traffic."""
    if flag:
        return True
    return os.environ.get(WIRE_LOG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _is_secret(key: str) -> bool:
    name = key.lower().replace("_", "").replace("-", "")
    return name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES)


def _redact_text(text: str) -> str:
    return _SECRET_IN_TEXT.sub(REDACTED, text)


def redact(value: Any, *, all_values: bool = False) -> Any:
    """A copy of decoded JSON with secrets replaced (see the module docstring)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            if all_values or _is_secret(name):
                # A credential: hide every string under it, keep the shape (and numbers).
                out[key] = redact(item, all_values=True)
            elif name.lower().endswith("headers"):
                out[key] = redact(item, all_values=True)
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list):
        return [redact(item, all_values=all_values) for item in value]
    if isinstance(value, str):
        return REDACTED if all_values else _redact_text(value)
    return value


def redact_line(line: bytes) -> str:
    """One wire line as log text, secrets redacted; a line that is not JSON is scrubbed of
    anything that looks like a credential."""
    try:
        text = _json.dumps(redact(_json.loads(line))).decode()
    except ValueError:
        text = _redact_text(line.decode("utf-8", "replace")).rstrip("\n")
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
