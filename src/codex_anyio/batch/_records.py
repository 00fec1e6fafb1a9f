"""Per-task records of a batch run through a model gateway: one cassette and one ATIF
trajectory per task (``run_batch(record=, trajectories=)``, ``batch --record/--trajectories``).

Each task's model calls are the gateway's exchanges of its thread, taken once its attempt
is over (completed, failed, timed out: an interrupted call is recorded as abandoned). The
files are named by the task id (:func:`file_stem`) and written whole, atomically, *before*
the task's result row: a run stopped in between leaves no row, so the task runs again on the
next run and its files are replaced, never duplicated; a task whose row exists has its files.
A retried task's files are those of its last attempt, the one its row describes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Final
from urllib.parse import quote

import anyio

from ..gateway._cassette import write_cassette
from ..gateway._exchange import Exchange
from ..gateway._gateway import ModelGateway
from ..trajectory._atif import build_trajectory, write_trajectory
from ._files import BatchResult, BatchTask

__all__ = ["CASSETTE_SUFFIX", "TRAJECTORY_SUFFIX", "TaskRecords", "file_stem"]

logger = logging.getLogger("codex_anyio.batch")

CASSETTE_SUFFIX: Final = ".jsonl"
TRAJECTORY_SUFFIX: Final = ".trajectory.json"

_MAX_STEM: Final = 120
"""Longest file stem kept as is (with the suffix, well under the usual 255-byte limit)."""

_PLAIN: Final = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def _encoded(task_id: str) -> str:
    # quote() leaves '.' and '~' as they are: '.' would allow '..' and hidden files, '~' is
    # the separator of a shortened name below.
    return quote(task_id, safe="_-").replace(".", "%2E").replace("~", "%7E")


def file_stem(task_id: str) -> str:
    """The file name (without suffix) of a task's records.

    The id itself when it is made of letters, digits, ``.``, ``_`` and ``-`` (not starting
    with a dot), else the id percent-encoded (``a/b`` is ``a%2Fb``, ``.`` is ``%2E``), so that
    no id can name a path outside the folder, a hidden file, or another id's file. An id whose
    name would be too long for a file system keeps its first characters and gets the SHA-256
    of the whole id."""
    stem = task_id if _PLAIN.match(task_id) else _encoded(task_id)
    if len(stem) > _MAX_STEM:
        digest = hashlib.sha256(task_id.encode()).hexdigest()[:16]
        stem = f"{stem[: _MAX_STEM - 17]}~{digest}"
    return stem


class TaskRecords:
    """Where a batch writes each task's cassette and trajectory (either folder may be None).

    :raises ValueError: if a folder is given but there is no gateway to take the calls from.
    """

    def __init__(
        self,
        gateway: object | None,
        *,
        record: str | os.PathLike[str] | None,
        trajectories: str | os.PathLike[str] | None,
    ) -> None:
        self.record = None if record is None else Path(record)
        self.trajectories = None if trajectories is None else Path(trajectories)
        if self.wanted and not isinstance(gateway, ModelGateway):
            raise ValueError(
                "record= and trajectories= write the model calls a gateway sees: give the "
                "batch gateway=ModelGateway(...) (or a pool opened with one)"
            )
        self._gateway = gateway if isinstance(gateway, ModelGateway) else None

    @property
    def wanted(self) -> bool:
        """Whether anything is recorded per task."""
        return self.record is not None or self.trajectories is not None

    def prepare(self) -> None:
        """Create the folders (and their parents) if missing."""
        for folder in (self.record, self.trajectories):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)

    async def save(self, task: BatchTask, result: BatchResult) -> None:
        """Write ``task``'s files for its attempt ``result`` (nothing for an attempt that
        made no model call: a task refused before its turn started)."""
        if self._gateway is None or result.thread_id is None or result.turn_id is None:
            return
        await self._gateway.settle(result.thread_id, result.turn_id)
        calls = self._gateway.exchanges(thread_id=result.thread_id)
        if not calls:
            return
        if calls[0].index != 0:
            # The gateway keeps its newest ``keep_exchanges`` calls: a batch that runs more
            # at once than that loses the oldest of a long task's before they are written.
            logger.warning(
                "batch: task %r: the gateway forgot the first %d model calls of its turn "
                "before they were recorded (raise the gateway's keep_exchanges)",
                task.id,
                calls[0].index,
            )
        await anyio.to_thread.run_sync(self._write, task, result, calls)

    def _write(self, task: BatchTask, result: BatchResult, calls: list[Exchange]) -> None:
        stem = file_stem(task.id)
        if self.record is not None:
            write_cassette(self.record / f"{stem}{CASSETTE_SUFFIX}", calls)
        if self.trajectories is not None:
            document = build_trajectory(
                calls,
                session_id=result.thread_id,
                prompts={result.turn_id or "": task.prompt},
                notes=f"codex-anyio batch task {task.id!r}, attempt {result.attempt}: "
                f"{result.status}",
            )
            write_trajectory(self.trajectories / f"{stem}{TRAJECTORY_SUFFIX}", document)
