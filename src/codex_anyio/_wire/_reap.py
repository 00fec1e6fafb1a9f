"""Finding and killing what the app-server started outside its process group (Linux ``/proc``).

Killing the runtime's process group is not enough: the runtime starts its shell-snapshot
shells in sessions of their own, and a command the model runs may ``setsid`` a child, which is
reparented to init as soon as its parent exits. Two nets catch them:

- **The tree, while it stands.** Before shutdown begins, ``/proc`` is walked from the runtime's
  pid through parent links; every descendant's pid (with its start time, so a recycled pid is
  never killed) is remembered and killed after the group.
- **The marker, after it fell.** Every process the runtime starts inherits its environment, in
  which :func:`~._transport.spawn_stdio` sets :data:`MARKER_ENV` to a value unique to
  that runtime. Once the runtime has exited, every process of ours still carrying that value
  in ``/proc/PID/environ`` is killed, whoever its parent is now.

A process that replaced its environment wholesale and left the tree before shutdown escapes
both; a cgroup would be the complete answer, and is not ours to create. A scan reads a few
small ``/proc`` files per process (milliseconds for hundreds of processes) and runs in the
event loop's thread: a worker thread would outlive the client (a sync client's ``close()``
promises that no thread does). On systems without ``/proc`` this module does nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import anyio

__all__ = ["MARKER_ENV", "ProcessTreeReaper", "new_marker"]

logger = logging.getLogger("codex_anyio.server")

MARKER_ENV: Final = "CODEX_ANYIO_RUNTIME_MARKER"
"""Environment variable that tags a runtime and everything it starts."""

REAP_TERM_GRACE: Final = 1.0
"""Seconds the leftovers get between SIGTERM and SIGKILL: a login shell killed outright in
the middle of its rc files can leave a lock behind (pyenv's ``rehash`` lock stalls every later
login shell on the machine for 60 s), so they are asked first."""

REAP_POLL: Final = 0.05
"""They are not our children, so there is nothing to wait on: poll ``/proc`` this often."""

_PROC = Path("/proc")


def new_marker() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex}"


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of ``pid``, or None if it is gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw.rpartition(b")")[2].split()
    try:
        return int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _pids() -> Iterator[int]:
    try:
        names = os.listdir(_PROC)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def _descendants(root: int) -> dict[int, int]:
    """Every descendant of ``root``: pid -> start time."""
    children: dict[int, list[tuple[int, int]]] = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None:
            children.setdefault(stat[0], []).append((pid, stat[1]))
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, started in children.get(todo.pop(), ()):
            if pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def _marked(marker: str) -> dict[int, int]:
    """Processes whose environment carries ``MARKER_ENV=marker``: pid -> start time."""
    needle = f"{MARKER_ENV}={marker}".encode()
    me = os.getpid()
    found: dict[int, int] = {}
    for pid in _pids():
        if pid == me:
            continue
        try:
            environ = (_PROC / str(pid) / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if needle in environ.split(b"\0"):
            stat = _stat(pid)
            if stat is not None:
                found[pid] = stat[1]
    return found


def _living(processes: dict[int, int]) -> dict[int, int]:
    """Those still running and still the ones we saw (same start time; zombies are dead)."""
    living: dict[int, int] = {}
    for pid, started in processes.items():
        try:
            raw = (_PROC / str(pid) / "stat").read_bytes()
        except OSError:
            continue
        fields = raw.rpartition(b")")[2].split()
        if len(fields) > 19 and fields[0] != b"Z" and int(fields[19]) == started:
            living[pid] = started
    return living


def _signal(processes: dict[int, int], sig: int) -> None:
    for pid in _living(processes):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


async def _wait_gone(processes: dict[int, int]) -> None:
    with anyio.move_on_after(REAP_TERM_GRACE):
        while _living(processes):  # noqa: ASYNC110 - not our children: nothing to await
            await anyio.sleep(REAP_POLL)


class ProcessTreeReaper:
    """Remembers a runtime's descendants and kills them, and its marked orphans, at the end."""

    def __init__(self, root: int, marker: str | None) -> None:
        self._root = root
        self._marker = marker
        self._seen: dict[int, int] = {}
        self._enabled = _PROC.is_dir() and hasattr(os, "kill")

    async def snapshot(self) -> None:
        """Record the runtime's current descendants (call before stopping it)."""
        if not self._enabled:
            return
        self._seen.update(_descendants(self._root))

    async def reap(self) -> None:
        """Kill the recorded descendants and every process still carrying the marker (call
        after the runtime has exited, so it can start nothing new)."""
        if not self._enabled:
            return
        targets = dict(self._seen)
        if self._marker is not None:
            targets.update(_marked(self._marker))
        targets = _living(targets)
        if not targets:
            return
        logger.debug("stopping %d process(es) app-server %d left behind", len(targets), self._root)
        _signal(targets, signal.SIGTERM)
        await _wait_gone(targets)
        _signal(targets, signal.SIGKILL)
        await _wait_gone(targets)  # SIGKILL is not instant: "nothing alive" when we return
