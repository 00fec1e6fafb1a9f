"""Token usage and rate limits: the typed figures, and the accounting behind them.

What the runtime reports (verified against 0.163.0): every model response that completes
sends one ``thread/tokenUsage/updated`` for its turn, whose ``last`` is that response's usage
and ``total`` the thread's running total. A turn with a tool call makes several model requests,
so it gets several updates. The runtime also *repeats* the thread's current figures without
new spending: when a stream failure (``response.failed``) or a usage limit ends a turn, often
when a turn is interrupted (even one that had no model response yet: then the repeat carries
the previous turn's ``last``), and on ``thread/resume`` (under the last turn's id). Summing
``last`` would count those repeats again; so a turn's usage is the growth of the thread's
``total`` over the turn:

* the total before the turn is the total this client last saw for the thread (zero for a
  thread it started), or else ``total - last`` of the turn's first update (the thread total
  before that model response). A repeat is recognised because its ``total`` does not exceed
  what was already seen;
* the turn's usage is its highest ``total`` minus that. Tokens already reported before an
  interrupt or a failure count: they were spent.

One case stays approximate: on a thread this client did not start (resumed, forked, or named
by id) whose first turn here is interrupted before any model response completed, a repeat of
the history's last figures cannot be told from new spending and is counted.

The per-thread and per-client running totals (``thread.usage()``, ``codex.usage()``) are the
sums of the usage of the turns this client consumed (ran or streamed), each turn counted once
even if two handles follow it, so per-turn figures always add up to them.

Rate limits: ``account/rateLimits/updated`` arrives after every model response and at any
other time, also before the first thread. The reader hands its params to
:meth:`RateLimits.update`, which only stores the dict: typing happens when someone reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, ClassVar

import attrs

from .._protocol._generated.converter import converter
from .._protocol._generated.models import RateLimitSnapshot, ThreadTokenUsage, TokenUsageBreakdown

__all__ = ["RateLimits", "TokenUsage", "TurnTally", "TurnUsage", "UsageLedger", "utc_datetime"]


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


@attrs.frozen(eq=False)
class TokenUsage:
    """Tokens spent, as the runtime counts them. Add them with ``+`` (or ``sum(...)``);
    ``TokenUsage()`` (also ``TokenUsage.ZERO``) is nothing.

    The field names are those of the wire's ``TokenUsageBreakdown`` (the official SDK's type
    for one breakdown), so code that reads ``.total_tokens`` on either keeps working.
    ``cached_input_tokens`` are part of ``input_tokens``, ``reasoning_output_tokens`` part of
    ``output_tokens``; ``total_tokens`` is input plus output.
    """

    ZERO: ClassVar[TokenUsage]

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_output_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_breakdown(cls, breakdown: Any) -> TokenUsage:
        """From a ``TokenUsageBreakdown`` or its wire dict; missing or invalid counts are 0."""
        if isinstance(breakdown, TokenUsageBreakdown):
            return cls(
                _count(breakdown.input_tokens),
                _count(breakdown.cached_input_tokens),
                _count(breakdown.output_tokens),
                _count(breakdown.reasoning_output_tokens),
                _count(breakdown.total_tokens),
            )
        if isinstance(breakdown, dict):
            return cls(
                _count(breakdown.get("inputTokens")),
                _count(breakdown.get("cachedInputTokens")),
                _count(breakdown.get("outputTokens")),
                _count(breakdown.get("reasoningOutputTokens")),
                _count(breakdown.get("totalTokens")),
            )
        return cls.ZERO

    def _figures(self) -> tuple[int, int, int, int, int]:
        return (
            self.input_tokens,
            self.cached_input_tokens,
            self.output_tokens,
            self.reasoning_output_tokens,
            self.total_tokens,
        )

    def __add__(self, other: TokenUsage) -> TokenUsage:
        if not isinstance(other, TokenUsage):
            return NotImplemented
        # Spelled out: this runs a few times per turn (a generator over zip cost 5x as much).
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_output_tokens + other.reasoning_output_tokens,
            self.total_tokens + other.total_tokens,
        )

    def __radd__(self, other: int) -> TokenUsage:
        if other == 0:  # sum() starts from 0
            return TokenUsage(*self._figures())
        return NotImplemented

    def __sub__(self, other: TokenUsage) -> TokenUsage:
        """The difference, each count floored at zero (figures only ever grow)."""
        if not isinstance(other, TokenUsage):
            return NotImplemented
        return TokenUsage(
            max(0, self.input_tokens - other.input_tokens),
            max(0, self.cached_input_tokens - other.cached_input_tokens),
            max(0, self.output_tokens - other.output_tokens),
            max(0, self.reasoning_output_tokens - other.reasoning_output_tokens),
            max(0, self.total_tokens - other.total_tokens),
        )

    def __eq__(self, other: object) -> bool:
        """Equal figures are equal usage, whichever subclass carries them."""
        if not isinstance(other, TokenUsage):
            return NotImplemented
        return self._figures() == other._figures()

    def __hash__(self) -> int:
        return hash(self._figures())


TokenUsage.ZERO = TokenUsage()


@attrs.frozen(eq=False)
class TurnUsage(TokenUsage):
    """One turn's usage (its own figures, see :class:`TokenUsage`), plus what the runtime
    last reported during it.

    ``reported`` is the turn's last ``thread/tokenUsage/updated`` as sent (None if there was
    none): the official SDK's ``TurnResult.usage``. ``total``, ``last`` and
    ``model_context_window`` read it, so official code keeps working; note that
    ``usage.total`` is the *thread's* running total, while ``usage.total_tokens`` is this
    turn's.
    """

    reported: ThreadTokenUsage | None = None

    @property
    def total(self) -> TokenUsageBreakdown | None:
        """The thread's total as of this turn's last report (official ``usage.total``)."""
        return self.reported.total if self.reported is not None else None

    @property
    def last(self) -> TokenUsageBreakdown | None:
        """The last model response's usage (official ``usage.last``)."""
        return self.reported.last if self.reported is not None else None

    @property
    def model_context_window(self) -> int | None:
        return self.reported.model_context_window if self.reported is not None else None


class _ThreadLedger:
    __slots__ = ("credited", "seen", "turn_credited", "turn_id", "usage")

    def __init__(self) -> None:
        self.seen: TokenUsage | None = None
        """The highest wire ``total`` seen for the thread (None: not known)."""
        self.usage = TokenUsage.ZERO
        self.turn_id: str | None = None
        self.turn_credited = TokenUsage.ZERO


class UsageLedger:
    """Running totals of one client: per thread and in all. Touched only by the tasks that
    consume turns, never by the reader."""

    __slots__ = ("_threads", "total")

    def __init__(self) -> None:
        self.total = TokenUsage.ZERO
        self._threads: dict[str, _ThreadLedger] = {}

    def thread_usage(self, thread_id: str) -> TokenUsage:
        entry = self._threads.get(thread_id)
        return entry.usage if entry is not None else TokenUsage.ZERO

    def started(self, thread_id: str) -> None:
        """A thread this client just started: its total is zero."""
        entry = self._entry(thread_id)
        if entry.seen is None:
            entry.seen = TokenUsage.ZERO

    def _entry(self, thread_id: str) -> _ThreadLedger:
        entry = self._threads.get(thread_id)
        if entry is None:
            entry = self._threads[thread_id] = _ThreadLedger()
        return entry

    def _credit(self, entry: _ThreadLedger, turn_id: str, usage: TokenUsage) -> None:
        """Count a turn's usage so far, once however many handles report it."""
        if entry.turn_id != turn_id:
            entry.turn_id = turn_id
            entry.turn_credited = TokenUsage.ZERO
        if usage.total_tokens <= entry.turn_credited.total_tokens:
            return
        delta = usage - entry.turn_credited
        entry.turn_credited = usage
        entry.usage += delta
        self.total += delta


class TurnTally:
    """One turn's usage, from the updates its handle consumes (see the module docstring)."""

    __slots__ = ("_base", "_ledger", "_top", "reported", "thread_id", "turn_id")

    def __init__(self, ledger: UsageLedger | None, thread_id: str, turn_id: str) -> None:
        self._ledger = ledger
        self.thread_id = thread_id
        self.turn_id = turn_id
        self._base: TokenUsage | None = None
        self._top = TokenUsage.ZERO
        self.reported: ThreadTokenUsage | None = None

    @property
    def usage(self) -> TokenUsage:
        return self._top - self._base if self._base is not None else TokenUsage.ZERO

    def update(self, token_usage: Any) -> None:
        """One ``thread/tokenUsage/updated`` of this turn (typed, or raw if it did not fit
        the schema). Never raises: usage accounting must not fail a turn."""
        if isinstance(token_usage, ThreadTokenUsage):
            self.reported = token_usage
            total = TokenUsage.from_breakdown(token_usage.total)
            last = TokenUsage.from_breakdown(token_usage.last)
        elif isinstance(token_usage, dict):
            total = TokenUsage.from_breakdown(token_usage.get("total"))
            last = TokenUsage.from_breakdown(token_usage.get("last"))
        else:
            return
        ledger = self._ledger
        entry = ledger._entry(self.thread_id) if ledger is not None else None
        seen = entry.seen if entry is not None else None
        if self._base is None:
            base = total - last
            if seen is not None and seen.total_tokens > base.total_tokens:
                base = seen  # a repeat of figures already counted, or a late earlier report
            self._base = self._top = base
        if total.total_tokens > self._top.total_tokens:
            self._top = total
        if entry is not None and ledger is not None:
            if seen is None or total.total_tokens > seen.total_tokens:
                entry.seen = total
            ledger._credit(entry, self.turn_id, self.usage)

    def result(self) -> TurnUsage:
        usage = self.usage
        return TurnUsage(
            usage.input_tokens,
            usage.cached_input_tokens,
            usage.output_tokens,
            usage.reasoning_output_tokens,
            usage.total_tokens,
            reported=self.reported,
        )


class RateLimits:
    """The latest ``account/rateLimits/updated`` per limit id, as received.

    An update is sparse: a field it leaves null keeps the value an earlier update of the same
    limit gave (the schema says so). ``update`` runs in the reader, so it only merges dicts.
    """

    __slots__ = ("_by_limit", "_latest", "updates")

    def __init__(self) -> None:
        self._by_limit: dict[Any, dict[str, Any]] = {}
        self._latest: dict[str, Any] | None = None
        self.updates = 0

    def update(self, params: dict[str, Any]) -> None:
        snapshot = params.get("rateLimits")
        if type(snapshot) is not dict:
            return
        key = snapshot.get("limitId")
        key = key if type(key) is str else None
        previous = self._by_limit.get(key)
        if previous is not None:
            merged = dict(previous)
            merged.update((k, v) for k, v in snapshot.items() if v is not None)
            snapshot = merged
        self._by_limit[key] = snapshot
        self._latest = snapshot
        self.updates += 1

    @staticmethod
    def _typed(raw: dict[str, Any] | None) -> RateLimitSnapshot | None:
        if raw is None:
            return None
        try:
            snapshot: RateLimitSnapshot = converter.structure(raw, RateLimitSnapshot)
        except Exception:
            return None  # schema drift: no typed view rather than an error on read
        return snapshot

    @property
    def latest(self) -> RateLimitSnapshot | None:
        """The most recent snapshot (merged with earlier ones of its limit id), or None."""
        return self._typed(self._latest)

    def by_limit(self) -> dict[str | None, RateLimitSnapshot]:
        """The latest snapshot of every limit id seen (``codex``, ...)."""
        typed = {key: self._typed(raw) for key, raw in self._by_limit.items()}
        return {key: value for key, value in typed.items() if value is not None}

    def windows(self) -> Iterator[tuple[float, int | None, int | None]]:
        """Every rate-limit window of every limit id seen, as ``(used_percent, resets_at,
        window_minutes)`` (reset in Unix seconds; None where the service did not say): what
        a pool's admission reads, without typing the snapshots."""
        for raw in self._by_limit.values():
            for name in ("primary", "secondary"):
                window = raw.get(name)
                if type(window) is not dict:
                    continue
                used = window.get("usedPercent")
                if not isinstance(used, (int, float)) or isinstance(used, bool):
                    continue
                resets = window.get("resetsAt")
                minutes = window.get("windowDurationMins")
                yield (
                    float(used),
                    resets if type(resets) is int else None,
                    minutes if type(minutes) is int else None,
                )

    def exhausted_reset(self) -> datetime | None:
        """When the exhausted windows (used 100 % or more) reset, the latest of them: the
        moment a usage-limited account can work again. None if no window is exhausted or
        none says when it resets."""
        resets = [at for used, at, _ in self.windows() if used >= 100 and at is not None]
        return utc_datetime(max(resets)) if resets else None


def utc_datetime(seconds: float) -> datetime | None:
    """Unix ``seconds`` as an aware UTC datetime; None for a value no datetime can hold."""
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
