"""Cassettes: a gateway's exchanges as JSON Lines, written as they finish, read back whole.

The format (version :data:`CASSETTE_VERSION`), one JSON object per line, UTF-8:

* line 1, the header: ``{"format": "codex-anyio-cassette", "version": 1, "created": ISO
  time, "writer": "codex-anyio VERSION"}``;
* every further line, one exchange, in the order the exchanges finished: ``thread_id``,
  ``turn_id``, ``request_kind``, ``index`` (the call's index within its turn),
  ``started_at`` (Unix seconds), ``request`` (``method``, ``path``, ``headers``,
  ``body``: the decoded JSON body), ``response`` (``status``, ``headers``, ``events``: the
  stream's decoded events, a string for an event that was not a JSON object; ``body``: the
  body of a non-stream answer), ``first_byte`` and ``total`` (seconds), ``usage``,
  ``abandoned``, ``dropped``, ``error``.

Credentials never reach the file: credential headers are replaced by ``[REDACTED]``, and
credential-looking values inside the body, the events and the headers are hidden as
everywhere else (``_redact.py``). A recording appends to an existing cassette of the same
version (its header is checked first), and each exchange is written and flushed as one line,
so a crash loses at most the exchange in flight; a torn last line is reported, by number,
when the cassette is next opened.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

from .. import __about__
from .._atomic import write_atomically
from .._exceptions import CassetteError
from .._json import dumps, loads
from ._exchange import Exchange
from ._request import ModelRequest, TextRedactor

__all__ = [
    "CASSETTE_FORMAT",
    "CASSETTE_VERSION",
    "CassetteWriter",
    "read_cassette",
    "write_cassette",
]

CASSETTE_FORMAT: Final = "codex-anyio-cassette"
CASSETTE_VERSION: Final = 1
"""The cassette format version this library writes and reads."""


def _header() -> dict[str, Any]:
    created = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "format": CASSETTE_FORMAT,
        "version": CASSETTE_VERSION,
        "created": created,
        "writer": f"codex-anyio {__about__.__version__}",
    }


def exchange_record(exchange: Exchange, redactor: TextRedactor | None = None) -> dict[str, Any]:
    """One exchange as a cassette line's object, credentials hidden."""
    redactor = redactor or TextRedactor()
    hide = redactor.redact
    request = exchange.request
    return {
        "thread_id": request.thread_id,
        "turn_id": request.turn_id,
        "request_kind": request.request_kind,
        "index": request.index,
        "started_at": exchange.started_at,
        "request": {
            "method": request.method,
            "path": request.path,
            "headers": request.redacted_headers(redactor),
            "body": hide(request.body),
        },
        "response": {
            "status": exchange.status,
            "headers": exchange.response_headers,
            "events": hide(exchange.events),
            "body": None if exchange.body is None else redactor(exchange.body),
        },
        "first_byte": exchange.first_byte,
        "total": exchange.total,
        "usage": exchange.usage,
        "abandoned": exchange.abandoned,
        "dropped": exchange.dropped,
        "error": exchange.error,
    }


def _check_header(path: str, line: bytes) -> None:
    try:
        header = loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != CASSETTE_FORMAT:
        raise CassetteError(path, 1, "not a cassette (its first line is not a cassette header)")
    version = header.get("version")
    if version != CASSETTE_VERSION:
        raise CassetteError(
            path,
            1,
            f"cassette version {version!r}; this codex-anyio reads version {CASSETTE_VERSION}",
        )


class CassetteWriter:
    """Appends exchanges to a cassette, one flushed line each.

    Writes are synchronous: one line of a few tens of kB goes to the page cache in
    microseconds, less than a thread hop would cost, and a line is never interleaved with
    another's because the event loop runs one write at a time.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._redactor = TextRedactor()

    def __enter__(self) -> CassetteWriter:
        try:
            self._file = open(self.path, "a+b")
        except OSError as exc:
            raise CassetteError(self.path, None, f"cannot be opened: {exc.strerror}") from exc
        try:
            self._prepare(self._file)
        except BaseException:
            self._file.close()
            raise
        return self

    def _prepare(self, file: IO[bytes]) -> None:
        size = file.seek(0, os.SEEK_END)
        if size == 0:
            file.write(dumps(_header()) + b"\n")
            file.flush()
            return
        file.seek(0)
        _check_header(self.path, file.readline())
        file.seek(size - 1)
        if file.read(1) != b"\n":
            file.seek(0)
            lines = sum(1 for _ in file)
            raise CassetteError(self.path, lines, "the last line is truncated (no newline)")
        file.seek(0, os.SEEK_END)

    def write(self, exchange: Exchange) -> None:
        assert self._file is not None
        self._file.write(dumps(exchange_record(exchange, self._redactor)) + b"\n")
        self._file.flush()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_cassette(path: str | os.PathLike[str], exchanges: Iterable[Exchange]) -> Path:
    """Write ``exchanges`` as one whole cassette at ``path``, replacing it atomically (a
    reader sees the old cassette or the new one, never part of one): what the batch writes
    per task, where a resumed run must find each task's cassette whole or not at all."""
    redactor = TextRedactor()
    lines = [dumps(_header())]
    lines += [dumps(exchange_record(exchange, redactor)) for exchange in exchanges]
    return write_atomically(path, b"\n".join(lines) + b"\n")


def _exchange_of(record: Any) -> Exchange:
    """The exchange of one cassette line (raises ValueError/KeyError/TypeError if it is not
    one)."""
    if not isinstance(record, dict):
        raise TypeError("an exchange line must be a JSON object")
    sent, answer = record["request"], record["response"]
    headers = sent.get("headers") or {}
    request = ModelRequest(
        method=str(sent["method"]),
        path=str(sent["path"]),
        headers={str(k): str(v) for k, v in headers.items()},
        body=sent.get("body"),
        raw_body=b"",
        thread_id=record.get("thread_id"),
        turn_id=record.get("turn_id"),
        request_kind=record.get("request_kind"),
        index=int(record.get("index", 0)),
    )
    exchange = Exchange(
        request,
        started_at=float(record.get("started_at") or time.time()),
        status=answer.get("status"),
        response_headers=dict(answer.get("headers") or {}),
        events=list(answer.get("events") or []),
        body=answer.get("body"),
        first_byte=record.get("first_byte"),
        total=record.get("total"),
        usage=record.get("usage"),
        abandoned=bool(record.get("abandoned")),
        dropped=bool(record.get("dropped")),
        error=record.get("error"),
    )
    exchange.finish_recorded()
    return exchange


def read_cassette(path: str | os.PathLike[str]) -> list[Exchange]:
    """Every exchange of a cassette, in file order.

    :raises CassetteError: if it cannot be read, is not a cassette of a known version, or a
        line is not valid JSON or not an exchange (the error names the line).
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise CassetteError(name, None, f"cannot be read: {exc.strerror}") from exc
    lines = data.split(b"\n")
    if not data:
        raise CassetteError(name, None, "the file is empty")
    _check_header(name, lines[0])
    exchanges: list[Exchange] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            exchanges.append(_exchange_of(loads(line)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            truncated = number == len(lines) and not data.endswith(b"\n")
            problem = "truncated (no newline)" if truncated else "not a valid exchange"
            raise CassetteError(name, number, f"{problem}: {type(exc).__name__}") from None
    return exchanges
