"""``Exchange``: the record of one model call, and the live log of them.

An exchange is created when a request has arrived and is updated as its answer goes out, so
``gateway.exchanges(...)`` shows calls in flight too; :attr:`Exchange.finished` says when it
is complete. The log keeps the newest ``keep`` exchanges (a long run would otherwise hold
every request body, ~40 kB each, in memory; a cassette keeps them all) and indexes them by
thread and turn, which is how ``TurnResult.model_calls`` finds a turn's calls.

``finished`` is a ``threading.Event``: the sync ``Codex`` runs its event loop in a thread of
its own, so the client waiting for a turn's calls to settle may live on another loop than the
gateway answering them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import attrs

from ._request import ModelRequest

__all__ = ["Exchange", "ExchangeLog"]

TurnKey = tuple[str | None, str | None]


@attrs.define(eq=False)
class Exchange:
    """One model call: the request, the answer, how long it took, what it cost.

    ``events`` are the sent stream events, decoded (a raw string for an event whose data is
    not a JSON object); ``body`` is the body of a non-stream answer (an error). Times are
    seconds: ``first_byte`` from the request's arrival to the first byte of the answer,
    ``total`` to its end. ``usage`` is the ``usage`` the answer reported (from
    ``response.completed``, or a failed or incomplete response), None if none. ``abandoned``:
    the runtime closed the stream before the answer was complete (an interrupted turn);
    ``dropped``: the answering side broke it off (a policy's :class:`DropConnection`, an
    upstream that failed mid-stream). ``error`` says what went wrong on the answering side (a
    policy that raised, an unreachable upstream), credentials hidden.
    """

    request: ModelRequest
    started_at: float = attrs.field(factory=time.time)
    """When the request arrived (Unix seconds)."""
    status: int | None = None
    response_headers: dict[str, str] = attrs.field(factory=dict)
    events: list[Any] = attrs.field(factory=list)
    body: str | None = None
    first_byte: float | None = None
    total: float | None = None
    usage: dict[str, Any] | None = None
    abandoned: bool = False
    dropped: bool = False
    error: str | None = None
    _answered: bool = attrs.field(default=False, repr=False)
    _clock: float = attrs.field(factory=time.perf_counter, repr=False)
    _done: threading.Event = attrs.field(factory=threading.Event, repr=False)

    @property
    def thread_id(self) -> str | None:
        return self.request.thread_id

    @property
    def turn_id(self) -> str | None:
        return self.request.turn_id

    @property
    def request_kind(self) -> str | None:
        return self.request.request_kind

    @property
    def index(self) -> int:
        """The call's index within its turn, from 0."""
        return self.request.index

    @property
    def finished(self) -> bool:
        """Whether the answer is complete (or was abandoned, or broken off)."""
        return self._done.is_set()

    @property
    def output_items(self) -> list[dict[str, Any]]:
        """The items of the answer (``response.output_item.done``), in order."""
        return [
            event["item"]
            for event in self.events
            if isinstance(event, dict)
            and event.get("type") == "response.output_item.done"
            and isinstance(event.get("item"), dict)
        ]

    @property
    def logprobs(self) -> list[Any]:
        """The token log-probabilities the answer carried (what an upstream asked with
        ``logprobs=True`` returns on each ``response.output_text.delta``), in order."""
        found: list[Any] = []
        for event in self.events:
            if isinstance(event, dict) and event.get("type") == "response.output_text.delta":
                found.extend(event.get("logprobs") or ())
        return found

    # -- updates from the gateway -------------------------------------------------------------

    def elapsed(self) -> float:
        return time.perf_counter() - self._clock

    def sent_first_byte(self) -> None:
        if self.first_byte is None:
            self.first_byte = self.elapsed()

    @property
    def answered(self) -> bool:
        """Whether the whole answer went out: a non-stream body, or a stream up to its final
        event (the runtime may close the connection before the stream's end marker)."""
        return self._answered

    def add_event(self, decoded: Any) -> None:
        self.events.append(decoded)
        if isinstance(decoded, dict) and decoded.get("type") in _FINAL_EVENTS:
            self._answered = True
            reported = (decoded.get("response") or {}).get("usage")
            if isinstance(reported, dict):
                self.usage = reported

    def sent_body(self) -> None:
        self._answered = True

    def finish(self) -> None:
        self.total = self.elapsed()
        self._done.set()

    def finish_recorded(self) -> None:
        """Mark an exchange read from a cassette finished (its times are the recorded ones)."""
        self._done.set()

    async def wait_finished(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait up to ``timeout`` seconds for the answer to complete; whether it did.

        The wait runs in a worker thread (the gateway may answer on another event loop), and
        a cancel scope cannot end a thread's wait: the bound is the thread's own.
        """
        if self._done.is_set():
            return True
        return await anyio.to_thread.run_sync(self._done.wait, timeout, abandon_on_cancel=True)


_FINAL_EVENTS = frozenset(("response.completed", "response.failed", "response.incomplete"))


class ExchangeLog:
    """The newest ``keep`` exchanges, in arrival order, indexed by (thread, turn)."""

    def __init__(self, keep: int) -> None:
        if keep < 1:
            raise ValueError("keep_exchanges must be at least 1")
        self._keep = keep
        self._all: deque[Exchange] = deque()
        self._by_turn: dict[TurnKey, list[Exchange]] = {}
        self._calls: dict[TurnKey, int] = {}
        """Calls seen per turn, for the turns the log still holds calls of."""
        self.forgotten = 0
        """Exchanges dropped from the log to stay within ``keep``."""

    def next_index(self, thread_id: str | None, turn_id: str | None) -> int:
        """The index of the next call of this turn."""
        key = (thread_id, turn_id)
        index = self._calls.get(key, 0)
        self._calls[key] = index + 1
        return index

    def add(self, exchange: Exchange) -> None:
        self._all.append(exchange)
        self._by_turn.setdefault((exchange.thread_id, exchange.turn_id), []).append(exchange)
        if len(self._all) > self._keep:
            self._forget(self._all.popleft())

    def _forget(self, exchange: Exchange) -> None:
        self.forgotten += 1
        key = (exchange.thread_id, exchange.turn_id)
        calls = self._by_turn.get(key)
        if calls is not None:
            calls.remove(exchange)
            if not calls:
                del self._by_turn[key]
                self._calls.pop(key, None)

    def __iter__(self) -> Iterator[Exchange]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def select(self, thread_id: str | None, turn_id: str | None) -> list[Exchange]:
        """Exchanges of one thread (and turn, if given), in arrival order."""
        if turn_id is not None:
            return list(self._by_turn.get((thread_id, turn_id), ()))
        if thread_id is None:
            return list(self._all)
        return [exchange for exchange in self._all if exchange.thread_id == thread_id]
