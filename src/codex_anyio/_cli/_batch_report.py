"""The ``codex-anyio batch`` display: progress while it runs, the summary when it ends.

``rich`` when it is installed and stderr is a terminal, one plain line per result otherwise
(readable in CI logs), or none; whichever, the first failure of each kind (a status and an
error type) is said with its message when it happens, and the summary counts the causes,
each with its first message, so that the results file is not the only place that says why.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final, Protocol, TextIO

from ..batch import STATUSES, BatchResult, percentile

__all__ = [
    "Cause",
    "NoProgress",
    "PlainProgress",
    "RichProgress",
    "Run",
    "Tally",
    "cause_lines",
    "first_line",
    "open_progress",
    "print_summary",
]


class Run(Protocol):
    """What the progress display reads from a batch run (local or on Ray)."""

    @property
    def running(self) -> int: ...

    @property
    def concurrency(self) -> int: ...


class Cause:
    """One kind of failure (a status and an error type): how many rows, and the first's
    message and task."""

    def __init__(self, result: BatchResult, error: Mapping[str, str]) -> None:
        self.count = 0
        self.status = result.status
        self.type = str(error.get("type", "?"))
        self.message = first_line(str(error.get("message", "")))
        self.task_id = result.id

    def describe(self) -> str:
        return f"{self.status}: {self.type}: {self.message}"


class Tally:
    """Counts, durations, tokens and failure causes of the results seen so far."""

    def __init__(self, total: int, skipped: int, again: int = 0) -> None:
        self.total = total
        self.skipped = skipped
        self.again = again
        """Tasks that run again (their latest row's status is in the retry set)."""
        self.statuses: Counter[str] = Counter()
        self.causes: dict[tuple[str, str], Cause] = {}
        """By (status, error type), in the order first seen."""
        self.durations: list[float] = []
        self.tokens = 0
        self.launched = self.started = time.monotonic()

    def pool_ready(self) -> None:
        """Rates and the tasks' wall time count from here, start-up is reported apart."""
        self.started = time.monotonic()

    @property
    def done(self) -> int:
        return sum(self.statuses.values())

    def add(self, result: BatchResult) -> Cause | None:
        """Count ``result``; return its cause if it is the first row of that kind."""
        self.statuses[result.status] += 1
        self.durations.append(result.duration_ms / 1000)
        self.tokens += result.total_tokens
        if result.error is None:
            return None
        kind = (result.status, str(result.error.get("type", "?")))
        cause = self.causes.get(kind)
        first = cause is None
        if cause is None:
            cause = self.causes[kind] = Cause(result, result.error)
        cause.count += 1
        return cause if first else None

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> str:
        rate, left = self.rate(), self.total - self.skipped - self.done
        if not left:
            return "0s"
        return f"{left / rate:.0f}s" if rate else "?"

    def not_completed(self) -> int:
        return self.done - self.statuses["completed"]


class PlainProgress:
    """One line per result on a stream: readable in CI logs and files."""

    def __init__(self, tally: Tally, run: Run, stream: TextIO) -> None:
        self._tally = tally
        self._run = run
        self._stream = stream

    def __enter__(self) -> PlainProgress:
        t = self._tally
        again = f" ({t.again} of them again)" if t.again else ""
        print(
            f"batch: {t.total} tasks, {t.skipped} already done, "
            f"{t.total - t.skipped} to run{again}, {self._run.concurrency} at a time",
            file=self._stream,
            flush=True,
        )
        return self

    def update(self, result: BatchResult) -> None:
        t = self._tally
        print(
            f"[{t.skipped + t.done}/{t.total}] {result.status} {result.id} "
            f"{result.duration_ms / 1000:.2f}s | running {self._run.running} "
            f"not completed {t.not_completed()} | {t.rate():.1f} tasks/s eta {t.eta()} "
            f"tokens {t.tokens}",
            file=self._stream,
            flush=True,
        )

    def note(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def __exit__(self, *exc_info: object) -> None:
        pass


class RichProgress:
    """A live bar: done / running / not completed, throughput, ETA and tokens."""

    def __init__(self, tally: Tally, run: Run, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._tally = tally
        self._run = run
        self._progress = Progress(
            TextColumn("[bold]batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=Console(file=stream),
            refresh_per_second=4,
        )
        self._task = self._progress.add_task(
            "batch", total=tally.total, completed=tally.skipped, stats=""
        )

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def update(self, result: BatchResult) -> None:
        t = self._tally
        stats = (
            f"running {self._run.running} · not completed {t.not_completed()} · "
            f"{t.rate():.1f}/s · {t.tokens:,} tokens"
        )
        self._progress.update(self._task, completed=t.skipped + t.done, stats=stats)

    def note(self, text: str) -> None:
        """A line above the live bar."""
        self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()


def _rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def open_progress(mode: str, tally: Tally, run: Run, stream: TextIO) -> Any:
    if mode == "auto":
        mode = "rich" if stream.isatty() and _rich_available() else "plain"
    if mode == "rich":
        return RichProgress(tally, run, stream)
    if mode == "plain":
        return PlainProgress(tally, run, stream)
    return NoProgress(stream)


class NoProgress:
    """No progress lines; what went wrong is still said (on ``stream``)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __enter__(self) -> NoProgress:
        return self

    def update(self, result: BatchResult) -> None:
        pass

    def note(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def __exit__(self, *exc_info: object) -> None:
        pass


def _summary_rows(tally: Tally) -> list[tuple[str, str]]:
    rows = [(status, str(tally.statuses[status])) for status in STATUSES if tally.statuses[status]]
    wall = time.monotonic() - tally.started
    rows += [
        ("skipped (already done)", str(tally.skipped)),
        ("start-up", f"{tally.started - tally.launched:.1f} s"),
        ("duration p50", f"{percentile(tally.durations, 50):.2f} s"),
        ("duration p95", f"{percentile(tally.durations, 95):.2f} s"),
        ("tokens", f"{tally.tokens:,}"),
        ("wall time", f"{wall:.1f} s"),
        ("throughput", f"{tally.rate():.2f} tasks/s"),
    ]
    return rows


def cause_lines(tally: Tally) -> list[str]:
    """``12 error: CredentialsMissingError: <the first such row's message>``, by count."""
    causes = sorted(tally.causes.values(), key=lambda cause: -cause.count)
    return [f"{cause.count} {cause.describe()}" for cause in causes]


def print_summary(tally: Tally, rich: bool, stream: TextIO) -> None:
    rows = _summary_rows(tally)
    causes = cause_lines(tally)
    if rich:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="batch summary")
        table.add_column("")
        table.add_column("", justify="right")
        for name, value in rows:
            table.add_row(name, value)
        console = Console(file=stream)
        console.print(table)
        if causes:
            console.print("causes (the first message of each):", markup=False)
            for line in causes:
                console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        return
    width = max(len(name) for name, _ in rows)
    print("batch summary", file=stream)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}", file=stream)
    if causes:
        print("causes (the first message of each):", file=stream)
        for line in causes:
            print(f"  {line}", file=stream)
    stream.flush()


MESSAGE_WIDTH: Final = 300
"""Characters of an error message shown on one line (the results file holds all of it)."""


def first_line(text: str) -> str:
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= MESSAGE_WIDTH else line[: MESSAGE_WIDTH - 3] + "..."
