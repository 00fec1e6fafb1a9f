"""The results file: a batch's only state, read back to resume and appended to one row at a time.

What it promises:

- **Nothing but result rows is appended to, nothing but a torn row is cut.** A file that holds
  other lines and no result row (notes, the tasks file) is refused (:class:`ResultsFileError`)
  before it is touched. In a results file, a last line without its newline is kept when it
  parses (a complete row whose newline is missing counts as done), and cut off only when it is
  the start of a row that a killed run left half-written.
- **One run at a time.** :class:`ResultWriter` holds an exclusive ``flock`` on the file from
  before it reads the rows already there until it closes; a second run on the same file is
  refused at once, naming the file, instead of running the same ids again.
- **A row is all or nothing.** Each row is one ``write`` of its bytes (flushed to the OS, so a
  killed process loses at most that row); when the OS fails it half-way (disk full, file
  system gone read-only), the partial row is cut off again and :class:`ResultsWriteError`
  names the cause, so the run can resume once that is fixed.
- **Only regular files.** ``-o /dev/stdout`` or a pipe is refused: a results file is read back
  before anything is appended, and reading a terminal would wait forever.
- **The last row of an id wins.** Running a task again (``--retry-failed``) appends its new
  row; nothing is rewritten in place, so the file stays append-only and a run killed half-way
  loses nothing. Reading it back keeps each id's latest row, and :func:`pending_tasks` runs
  again only the ids whose latest row has a status the caller asks to retry.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs

from .._exceptions import ResultsFileError, ResultsWriteError
from ._files import RUN_AGAIN, STATUSES, BatchResult, BatchTask

__all__ = ["NOT_COMPLETED", "ResultWriter", "pending_tasks", "percentile", "read_results"]

logger = logging.getLogger("codex_anyio.batch")

NOT_COMPLETED: Final = frozenset(STATUSES) - {"completed"}
"""Every status but ``completed``: what ``--retry-failed`` runs again."""


@attrs.define
class _Scan:
    """What a results file holds."""

    results: dict[str, BatchResult] = attrs.field(factory=dict)
    rows: int = 0
    """Lines that are result rows."""
    foreign: int = 0
    """Other non-blank lines (skipped)."""
    first_foreign: tuple[int, str] = (0, "")
    """The first of those: its line number, and why it is not a row."""
    size: int = 0
    """Bytes in the file."""
    keep: int = 0
    """Bytes to keep: all but a torn last row."""
    terminated: bool = True
    """Whether the kept bytes end with a newline (or there are none)."""

    def note_foreign(self, number: int, reason: str) -> None:
        if not self.foreign:
            self.first_foreign = (number, reason)
        self.foreign += 1

    def warn(self, path: Path) -> None:
        if self.foreign:
            number, reason = self.first_foreign
            logger.warning(
                "%s: skipping %d line(s) that are not result rows (line %d: %s)",
                path,
                self.foreign,
                number,
                reason,
            )
        if self.keep < self.size:
            logger.warning(
                "%s: ignoring a truncated last row (%d bytes)", path, self.size - self.keep
            )

    def refuse_if_foreign(self, path: Path) -> None:
        """A file with lines but no result row is someone else's: never append to it."""
        if self.foreign and not self.rows:
            number, reason = self.first_foreign
            raise ResultsFileError(
                os.fspath(path),
                f"{path} is not a results file (line {number}: {reason}); "
                "refusing to append results to it",
            )


def _lines(fd: int) -> Iterator[tuple[int, bytes]]:
    """The lines of the open file from its start, with their offsets (one line in memory at a
    time: a results file can be large)."""
    with open(fd, "rb", closefd=False) as reader:
        reader.seek(0)
        offset = 0
        for line in reader:
            yield offset, line
            offset += len(line)


def _row(line: bytes) -> BatchResult:
    """:raises ValueError: if ``line`` is not a result row."""
    return BatchResult.from_json(json.loads(line))


def _torn(line: bytes) -> bool:
    """Whether the file's last line is the start of a row cut short: no newline, the opening
    brace of an object, and no complete JSON value (a complete row whose newline is missing
    parses, and so does anything else a person wrote there)."""
    if line.endswith(b"\n") or not line.lstrip().startswith(b"{"):
        return False
    try:
        json.loads(line)
    except ValueError:
        return True
    return False


def _scan(fd: int) -> _Scan:
    scan = _Scan()
    last = b""
    torn_at: int | None = None
    for number, (offset, line) in enumerate(_lines(fd), 1):
        scan.size, last = offset + len(line), line
        if not line.strip():
            continue
        try:
            result = _row(line)
        except ValueError as exc:
            if _torn(line):
                torn_at = offset
            else:
                scan.note_foreign(number, str(exc))
            continue
        scan.rows += 1
        scan.results[result.id] = result
    scan.keep = scan.size if torn_at is None else torn_at
    scan.terminated = torn_at is not None or not last or last.endswith(b"\n")
    return scan


def _open(path: Path, *, write: bool) -> int | None:
    """The results file's descriptor (None: it does not exist and ``write`` is false).

    ``O_NONBLOCK`` so that opening a FIFO cannot wait for a writer (it means nothing for a
    regular file, the only kind accepted).

    :raises ResultsFileError: if it cannot be opened or is not a regular file.
    """
    flags = os.O_NONBLOCK | os.O_CLOEXEC
    flags |= os.O_RDWR | os.O_CREAT | os.O_APPEND if write else os.O_RDONLY
    try:
        fd = os.open(path, flags, 0o666)
    except FileNotFoundError:
        if not write:
            return None
        raise ResultsFileError(
            os.fspath(path), f"cannot open the results file {path}: its folder does not exist"
        ) from None
    except OSError as exc:
        raise ResultsFileError(
            os.fspath(path), f"cannot open the results file {path}: {exc.strerror or exc}"
        ) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ResultsFileError(
            os.fspath(path),
            f"the results file {path} is not a regular file (a results file is read back "
            "before it is appended to)",
        )
    return fd


def _lock(fd: int, path: Path) -> None:
    """An exclusive lock on the open file, or a refusal: never two runs on one file."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ResultsFileError(
            os.fspath(path),
            f"the results file {path} is in use by another batch run; "
            "wait for it to end (it resumes the same way) or write to another file",
        ) from None


def _write_all(fd: int, data: bytes) -> None:
    """The one place a row's bytes reach the file (where tests inject a full disk)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _encode(result: BatchResult) -> bytes:
    data = result.to_json()
    try:
        return (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        # Text that is not valid Unicode (a lone surrogate, e.g. an id "\ud800" made in
        # Python): escaped, the row is ASCII and reads back as the same string.
        return (json.dumps(data) + "\n").encode("ascii")


def read_results(path: str | os.PathLike[str], *, repair: bool = False) -> dict[str, BatchResult]:
    """The results already in a JSONL results file, by id (missing file: none): each id's
    latest row, when a task was run again.

    A last row cut short (a run killed mid-write) is ignored; a complete last row without its
    newline counts. Lines that are not result rows are skipped with a warning. With
    ``repair=True`` the file is first made ready for appending, as :class:`ResultWriter`
    does (the torn row cut off, a missing newline added), under its lock.

    :raises ResultsFileError: if it is not a regular file or cannot be opened (with
        ``repair``: also if it is not a results file, or another run holds it).
    """
    file = Path(path)
    if repair:
        if not file.exists():
            return {}
        with ResultWriter(file) as writer:
            return writer.results
    fd = _open(file, write=False)
    if fd is None:
        return {}
    try:
        scan = _scan(fd)
    finally:
        os.close(fd)
    scan.warn(file)
    return scan.results


def pending_tasks(
    tasks: Iterable[BatchTask],
    results: Mapping[str, BatchResult],
    *,
    retry: Iterable[str] = (),
) -> list[BatchTask]:
    """The tasks a resuming run still has to run: those with no row in ``results`` (what
    :func:`read_results` or :attr:`ResultWriter.results` gives), and those whose latest row's
    status is in ``retry`` (e.g. ``{"error", "timeout"}``, or :data:`NOT_COMPLETED`).

    Every other id counts as done, whatever its status: a re-run does not repeat what
    finished unless asked to; except ``usage_limit`` rows (:data:`RUN_AGAIN`), run again
    always.

    :raises ValueError: for a ``retry`` status that is not one of :data:`STATUSES`.
    """
    again = frozenset(retry)
    unknown = sorted(again - set(STATUSES))
    if unknown:
        raise ValueError(f"unknown status(es) {unknown}: a status is one of {list(STATUSES)}")
    again |= RUN_AGAIN
    return [task for task in tasks if task.id not in results or results[task.id].status in again]


class ResultWriter:
    """Appends results to a JSONL results file, one whole row at a time, holding its lock.

    ``with ResultWriter(path) as writer``: opens (creates) the file, takes its lock, reads the
    rows already there into :attr:`results` (what a resuming run skips), and makes it ready
    for appending. See the module docstring for what it refuses and why.

    :raises ResultsFileError: on entering, for a file that cannot be used.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.results: dict[str, BatchResult] = {}
        """The rows the file held when it was opened, by id (each id's latest)."""
        self._fd: int | None = None
        self._size = 0

    def __enter__(self) -> ResultWriter:
        fd = _open(self.path, write=True)
        assert fd is not None
        try:
            _lock(fd, self.path)
            scan = _scan(fd)
            scan.refuse_if_foreign(self.path)
            scan.warn(self.path)
            self._fd = fd
            self._size = scan.size
            if scan.keep < scan.size:  # a torn last row
                self._truncate(scan.keep)
            if not scan.terminated:  # a kept last line: the next row starts on its own
                self._append(b"\n")
        except BaseException:
            self._fd = None
            os.close(fd)
            raise
        self.results = scan.results
        return self

    def write(self, result: BatchResult) -> None:
        """Append one row.

        :raises ResultsWriteError: if the OS refused it (nothing of the row is left behind).
        """
        self._append(_encode(result))

    def _append(self, data: bytes) -> None:
        assert self._fd is not None, "use 'with ResultWriter(path) as writer'"
        before = self._size
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            try:
                self._truncate(before)
            except ResultsWriteError:
                pass  # the next run cuts the torn row
            raise ResultsWriteError(os.fspath(self.path), exc) from exc
        self._size = before + len(data)

    def _truncate(self, size: int) -> None:
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            raise ResultsWriteError(os.fspath(self.path), exc) from exc
        self._size = size

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # and with it the lock
            self._fd = None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])
