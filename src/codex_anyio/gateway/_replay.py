"""Replay: answer each model call with the recorded answer to the same request.

Matching is in order per thread and turn. Thread and turn ids are the runtime's own and
differ between runs, so a new thread of this run is bound to the first recorded thread not
bound yet whose first call matches its first request; a new turn of a bound thread to that
thread's next recorded turn; and call *k* of a turn is compared with recorded call *k*.
Concurrent threads therefore replay correctly in whatever order they arrive.

Requests are compared after normalising what changes from run to run without meaning
anything (:func:`normalise`): the body's ``prompt_cache_key`` and ``client_metadata`` (ids
and the turn metadata) are dropped; in every string the working directory the runtime
declares (``<cwd>…</cwd>`` of its environment context) becomes ``<cwd>``, UUIDs become
``<uuid>``, and the ``<current_date>`` and ``<timezone>`` of the environment context and the
``Wall time: … seconds`` and ``Chunk ID: …`` of a command's output and the folders of the
skill roots table (under ``CODEX_HOME``) are blanked; credentials are hidden as in the
cassette. Anything else that differs (a prompt, a tool's output, the
tool list, the model) is a mismatch: the call is answered with HTTP 400 (which the runtime
does not retry), and the turn raises :class:`~codex_anyio.ReplayMismatchError` naming the
thread, turn, call index and the differing fields.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

import anyio

from .._exceptions import ReplayMismatchError
from .._json import dumps
from .._redact import preview
from ._answerer import PolicyAnswerer
from ._cassette import read_cassette
from ._events import DropConnection, PlainResponse, ResponseEvent, SseEvent, StreamStart
from ._exchange import Exchange
from ._request import ModelRequest, TextRedactor

__all__ = ["VOLATILE_FIELDS", "ReplayAnswerer", "differences", "normalise"]

VOLATILE_FIELDS: Final = ("prompt_cache_key", "client_metadata")
"""Top-level request fields left out of the comparison (per-run ids)."""

MAX_DIFFERENCES: Final = 8
"""How many differing fields a mismatch names (the first ones, in document order)."""

_UUID: Final = re.compile(
    r"(?<![0-9a-fA-F])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{12}(?![0-9a-fA-F])"
)
_CWD: Final = re.compile(r"<cwd>([^<\n]+)</cwd>")
_BLANKED: Final = (
    (re.compile(r"<current_date>[^<]*</current_date>"), "<current_date>*</current_date>"),
    (re.compile(r"<timezone>[^<]*</timezone>"), "<timezone>*</timezone>"),
    (re.compile(r"Wall time: [0-9.]+ seconds"), "Wall time: * seconds"),
    (re.compile(r"Chunk ID: [0-9a-f]+"), "Chunk ID: *"),
    (re.compile(r"(- `r\d+` = `)[^`\n]*`"), r"\1<skill root>`"),
)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _rewrite(value: Any, fix: Any) -> Any:
    if isinstance(value, str):
        return fix(value)
    if isinstance(value, dict):
        return {key: _rewrite(item, fix) for key, item in value.items()}
    if isinstance(value, list):
        return [_rewrite(item, fix) for item in value]
    return value


def normalise(body: Any, redactor: TextRedactor | None = None) -> Any:
    """A request body with its volatile parts normalised (see the module docstring)."""
    body = (redactor or TextRedactor()).redact(body)
    if isinstance(body, dict):
        body = {key: value for key, value in body.items() if key not in VOLATILE_FIELDS}
    roots = sorted(
        {match for text in _strings(body) for match in _CWD.findall(text)}, key=len, reverse=True
    )

    def fix(text: str) -> str:
        for root in roots:
            text = text.replace(root, "<cwd>")
        text = _UUID.sub("<uuid>", text)
        for pattern, blank in _BLANKED:
            text = pattern.sub(blank, text)
        return text

    return _rewrite(body, fix)


_ABSENT: Final = object()

_CONTEXT: Final = 40
"""Characters shown before the first difference of two long strings."""


def _show(value: Any, start: int = 0) -> str:
    if value is _ABSENT:
        return "(absent)"
    if isinstance(value, str) and start:
        return "..." + preview(dumps(value[start:]).decode(), 120)
    return preview(dumps(value).decode(), 120)


def _shown(recorded: Any, sent: Any) -> tuple[str, str]:
    """Both values for a message; two strings from a little before where they part."""
    start = 0
    if isinstance(recorded, str) and isinstance(sent, str):
        same = len(os.path.commonprefix((recorded, sent)))  # noqa: RUF071 - by character
        start = same - _CONTEXT if same > _CONTEXT else 0
    return _show(recorded, start), _show(sent, start)


def differences(recorded: Any, sent: Any, path: str = "") -> list[tuple[str, str, str]]:
    """``(field, recorded, sent)`` for each differing leaf of two normalised bodies, in
    document order (at most :data:`MAX_DIFFERENCES`)."""
    found: list[tuple[str, str, str]] = []
    _diff(recorded, sent, path, found)
    return found


def _diff(recorded: Any, sent: Any, path: str, found: list[tuple[str, str, str]]) -> None:
    if len(found) >= MAX_DIFFERENCES or recorded == sent:
        return
    if isinstance(recorded, dict) and isinstance(sent, dict):
        keys = list(recorded) + [key for key in sent if key not in recorded]
        for key in keys:
            child = f"{path}.{key}" if path else str(key)
            _diff(recorded.get(key, _ABSENT), sent.get(key, _ABSENT), child, found)
        return
    if isinstance(recorded, list) and isinstance(sent, list):
        for index in range(max(len(recorded), len(sent))):
            _diff(
                recorded[index] if index < len(recorded) else _ABSENT,
                sent[index] if index < len(sent) else _ABSENT,
                f"{path}[{index}]",
                found,
            )
        return
    found.append((path or "(body)", *_shown(recorded, sent)))


class _RecordedTurn:
    def __init__(self, thread_id: str | None, turn_id: str | None) -> None:
        self.thread_id = thread_id
        self.turn_id = turn_id
        self.calls: list[Exchange] = []


class _RecordedThread:
    def __init__(self, thread_id: str | None) -> None:
        self.thread_id = thread_id
        self.turns: list[_RecordedTurn] = []
        self.next_turn = 0
        self.bound = False


def _answer_of(recorded: Exchange) -> list[ResponseEvent]:
    """The recorded answer as events to send again."""
    headers = tuple(recorded.response_headers.items())
    if (recorded.status is not None and recorded.status != 200) or (
        recorded.body is not None and not recorded.events
    ):
        return [PlainResponse(recorded.status or 500, recorded.body or "", headers)]
    events: list[ResponseEvent] = [StreamStart(headers)]
    for event in recorded.events:
        events.append(event if isinstance(event, dict) else SseEvent(str(event)))
    return events


class ReplayAnswerer(PolicyAnswerer):
    """Answers from a cassette (see the module docstring)."""

    def __init__(self, path: str) -> None:
        super().__init__(self._answer)
        self.path = path
        self._threads: list[_RecordedThread] = []
        self._bound_threads: dict[str, _RecordedThread] = {}
        self._bound_turns: dict[tuple[str, str | None], _RecordedTurn] = {}
        self._unjoined: list[Exchange] = []
        self._unjoined_next = 0
        self._normalised: dict[int, Any] = {}
        self.mismatches: dict[tuple[str | None, str | None], ReplayMismatchError] = {}
        self._redactor = TextRedactor()
        self._load(read_cassette(path))

    def _load(self, exchanges: list[Exchange]) -> None:
        threads: dict[str, _RecordedThread] = {}
        turns: dict[tuple[str, str | None], _RecordedTurn] = {}
        # File order is finishing order; within a turn, calls go by their index.
        for exchange in sorted(exchanges, key=lambda e: e.started_at):
            if exchange.thread_id is None:
                self._unjoined.append(exchange)
                continue
            thread = threads.get(exchange.thread_id)
            if thread is None:
                thread = threads[exchange.thread_id] = _RecordedThread(exchange.thread_id)
                self._threads.append(thread)
            key = (exchange.thread_id, exchange.turn_id)
            turn = turns.get(key)
            if turn is None:
                turn = turns[key] = _RecordedTurn(exchange.thread_id, exchange.turn_id)
                thread.turns.append(turn)
            turn.calls.append(exchange)
        for turn in turns.values():
            turn.calls.sort(key=lambda e: e.index)

    def turn_error(self, thread_id: str, turn_id: str) -> ReplayMismatchError | None:
        return self.mismatches.get((thread_id, turn_id))

    def _body(self, exchange: Exchange) -> Any:
        key = id(exchange)
        if key not in self._normalised:
            self._normalised[key] = normalise(exchange.request.body, self._redactor)
        return self._normalised[key]

    async def _answer(self, request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        if not request.is_responses_call:
            yield PlainResponse(404, dumps({"error": {"message": f"no route {request.path}"}}))
            return
        found = self._match(request)
        if isinstance(found, ReplayMismatchError):
            self.mismatches[(request.thread_id, request.turn_id)] = found
            error = {
                "type": "invalid_request_error",
                "code": "replay_mismatch",
                "message": str(found),
            }
            yield PlainResponse(400, dumps({"error": error}))
            return
        for event in _answer_of(found):
            yield event
        if found.dropped:
            raise DropConnection
        if found.abandoned:
            # Recorded while the runtime dropped the stream (an interrupted turn): hold it
            # open until this run's runtime drops it too.
            await anyio.sleep_forever()

    def _mismatch(
        self, request: ModelRequest, recorded: Exchange | None, sent: Any, *, reason: str = ""
    ) -> ReplayMismatchError:
        diffs: tuple[tuple[str, str, str], ...] = ()
        if recorded is not None and not reason:
            diffs = tuple(differences(self._body(recorded), sent))
        return ReplayMismatchError(
            thread_id=request.thread_id,
            turn_id=request.turn_id,
            index=request.index,
            differences=diffs,
            recorded_thread_id=None if recorded is None else recorded.thread_id,
            recorded_turn_id=None if recorded is None else recorded.turn_id,
            reason=reason,
        )

    def _matches(self, recorded: Exchange, sent: Any) -> bool:
        return bool(self._body(recorded) == sent)

    def _match(self, request: ModelRequest) -> Exchange | ReplayMismatchError:
        """The recorded call that answers ``request``, or why there is none."""
        sent = normalise(request.body, self._redactor)
        if request.thread_id is None:
            if self._unjoined_next >= len(self._unjoined):
                return self._mismatch(
                    request, None, sent, reason="the cassette holds no more calls"
                )
            recorded = self._unjoined[self._unjoined_next]
            self._unjoined_next += 1
            return (
                recorded
                if self._matches(recorded, sent)
                else self._mismatch(request, recorded, sent)
            )
        thread = self._bound_threads.get(request.thread_id)
        if thread is None:
            free = [t for t in self._threads if not t.bound and t.turns]
            if not free:
                recorded_threads = len(self._threads)
                return self._mismatch(
                    request,
                    None,
                    sent,
                    reason=f"the cassette holds no more threads ({recorded_threads} recorded)",
                )
            thread = next(
                (
                    t
                    for t in free
                    if request.index == 0 and self._matches(t.turns[0].calls[0], sent)
                ),
                None,
            )
            if thread is None:
                return self._mismatch(request, free[0].turns[0].calls[0], sent)
            thread.bound = True
            self._bound_threads[request.thread_id] = thread
        key = (request.thread_id, request.turn_id)
        turn = self._bound_turns.get(key)
        if turn is None:
            if thread.next_turn >= len(thread.turns):
                return self._mismatch(
                    request,
                    None,
                    sent,
                    reason=f"the cassette holds only {len(thread.turns)} turn(s) of this thread",
                )
            turn = thread.turns[thread.next_turn]
            thread.next_turn += 1
            self._bound_turns[key] = turn
        if request.index >= len(turn.calls):
            return self._mismatch(
                request,
                None,
                sent,
                reason=f"the cassette holds only {len(turn.calls)} model call(s) of this turn",
            )
        recorded = turn.calls[request.index]
        return (
            recorded if self._matches(recorded, sent) else self._mismatch(request, recorded, sent)
        )
