"""The app-server process on stdio: spawning it, its stderr tail, and shutting it down.

What this module promises: once :func:`spawn_stdio` returns, :meth:`StdioTransport.aclose`
will leave no process behind, whatever cancellation is in flight. Shutdown is shielded and
every step is bounded: close stdin (the runtime exits on EOF), wait; SIGTERM the process
group, wait; SIGKILL the group, wait. The process starts in its own session, so the commands
it runs for the model die with it and a Ctrl-C meant for our program does not reach it half
way through a write.

A process group is not the whole tree, though: the runtime starts its shell-snapshot shells in
sessions of their own, and a command may ``setsid`` a child that is then reparented to init
(measured: 28 of 38 snapshot shells alive 0.5 s after shutdown). On Linux the shutdown
therefore also reaps (see ``_reap.py``) every descendant found by walking ``/proc`` before the
runtime is stopped, and every process that still carries this runtime's marker variable
(:data:`~codex_anyio._wire._reap.MARKER_ENV`, set in its environment at spawn and inherited by
everything it starts) once it has exited.

A runtime started by a ``CodexConfig(command=...)`` may run where ``/proc`` does not reach
(``docker exec``: the in-container processes are the container engine's children, not ours).
Closing stdin first is what reaches it there: the runtime exits on end of input and ends the
process groups of the commands it started (measured: 27 ms, the commands gone, with no
signal from us). The config's ``stop_command`` then ends whatever a sandbox may still hold
(``docker rm -f``); a sandbox with a pid namespace of its own (``bwrap --unshare-pid``,
``unshare -pf``) ends with its first process, taking everything in it along.

stderr carries human logs; it is drained continuously (a full pipe would stall the runtime)
into a bounded ring whose tail goes into every :class:`TransportClosedError`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from typing import Protocol

import anyio
import anyio.abc

from .._exceptions import CodexNotFoundError, StartupError
from .._redact import redact_text
from ._config import CodexConfig
from ._reap import MARKER_ENV, ProcessTreeReaper, new_marker

__all__ = ["StdioTransport", "Transport", "abort_transport", "spawn_stdio"]

logger = logging.getLogger("codex_anyio.server")

DEFAULT_STDERR_TAIL_BYTES = 64 * 1024
"""How much of the runtime's stderr is kept for error messages: enough for a panic's
backtrace or a config error, small enough to hold for every client."""

STDIN_CLOSE_GRACE = 3.0
"""Seconds the runtime gets to exit by itself after stdin closes (it finishes writing its
session files); measured exits take a few tens of milliseconds."""

TERMINATE_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL."""

EXIT_REPORT_WAIT = 2.0
"""After stdout closes, how long to wait for the exit status and the rest of stderr, so the
error we raise can name them."""

STOP_COMMAND_TIMEOUT = 10.0
"""Seconds a ``stop_command`` gets (``docker rm -f`` of a busy container takes a second or
two) before it is killed: a hung container engine must not hang the client's close."""

READ_CHUNK = 1024 * 1024

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]")


class Transport(Protocol):
    """What the connection needs from a byte transport: the stdio process here, a WebSocket
    connection to a running server in ``_ws.py``.

    A transport may also have ``abort()`` (see :func:`abort_transport`): called before
    ``aclose()`` when the peer stopped answering, it makes the close skip its courtesy waits.
    """

    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes:
        """Next chunk of bytes; raises ``anyio.EndOfStream`` at the end."""
        ...

    async def exit_info(self) -> tuple[int | None, str]:
        """Exit status (if known, after a bounded wait) and the stderr tail."""
        ...

    def stderr_tail(self) -> str:
        """What the peer said on stderr lately (empty where there is none), without waiting."""
        ...

    def end_reason(self) -> str | None:
        """Why the stream ended, when the transport knows better than "output closed" (a
        WebSocket close frame's code and reason); ``None`` otherwise."""
        ...

    async def aclose(self) -> None: ...


def abort_transport(transport: Transport) -> None:
    """Tell ``transport`` that its peer stopped answering, if it has a use for that (the
    optional ``abort()``; a custom transport need not have one)."""
    abort = getattr(transport, "abort", None)
    if abort is not None:
        abort()


class _StderrTail:
    """A byte ring: the last ``limit`` bytes of stderr, ANSI colour codes removed."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0

    def append(self, chunk: bytes) -> None:
        chunk = _ANSI.sub(b"", chunk)
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size > self._limit and len(self._chunks) > 1:
            self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        data = b"".join(self._chunks)[-self._limit :]
        return data.decode("utf-8", errors="replace")


def _writer_now(stdin: object) -> Callable[[bytes], int] | None:
    """A function that writes to the runtime's stdin without waiting, returning how many bytes
    it took (0: none, try the asynchronous way), or None where there is none.

    asyncio: the ``StreamWriter`` under AnyIO's wrapper takes the whole message (its transport
    writes at once or buffers the rest and flushes it itself, in order) unless its buffer is
    above the high-water mark. Trio: one ``os.write`` on the non-blocking pipe, whole or
    partial. Either way no task switch and no loop iteration per message, where going through
    the writer task costs a wake-up and the wrapper's checkpoint. Not on Windows.
    """
    stream = getattr(stdin, "_stream", None)
    if stream is None or sys.platform == "win32":
        return None
    protocol = getattr(stream, "_protocol", None)
    transport = getattr(stream, "transport", None)
    if protocol is not None and transport is not None and hasattr(protocol, "_paused"):
        write = stream.write

        def buffered(data: bytes) -> int:
            if protocol._paused or transport.is_closing():
                return 0
            write(data)
            return len(data)

        return buffered
    fileno = getattr(stream, "fileno", None)
    if not callable(fileno):
        return None
    fd = fileno()

    def direct(data: bytes) -> int:
        try:
            return os.write(fd, data)
        except OSError:  # full (EAGAIN) or broken: the asynchronous way waits or reports it
            return 0

    return direct


class StdioTransport:
    """A running ``codex app-server --listen stdio://`` process."""

    def __init__(
        self,
        process: anyio.abc.Process,
        *,
        stderr_tail_bytes: int,
        marker: str | None = None,
        config: CodexConfig | None = None,
    ) -> None:
        self._process = process
        self._config = config or CodexConfig()
        self._reaper = ProcessTreeReaper(process.pid, marker)
        self._stderr = _StderrTail(stderr_tail_bytes)
        self._stderr_done = anyio.Event()
        self._closed = False
        self._aborted = False
        assert process.stdin is not None
        assert process.stdout is not None
        self._stdin = process.stdin
        self._stdout = process.stdout
        self._write_now = _writer_now(process.stdin)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def stderr_tail(self) -> str:
        return self._stderr.text()

    def end_reason(self) -> str | None:
        # The exit status and stderr tail say the rest; a sandbox is named, as there may be
        # many (one per task) and its command is what the user wrote.
        shown = self._config.shown_command()
        return None if shown is None else f"the app-server started by `{shown}` ended"

    async def drain_stderr(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Read stderr until EOF into the ring (and the debug log). Run it in a task group."""
        task_status.started()
        stream = self._process.stderr
        try:
            if stream is None:
                return
            debug = logger.isEnabledFor(logging.DEBUG)
            while True:
                try:
                    chunk = await stream.receive(READ_CHUNK)
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return
                self._stderr.append(chunk)
                if debug:
                    for line in chunk.decode("utf-8", "replace").splitlines():
                        logger.debug("%s", line)
        finally:
            self._stderr_done.set()

    async def send(self, data: bytes) -> None:
        await self._stdin.send(data)

    def try_send(self, data: bytes) -> int:
        """Write what can be written of ``data`` now, without waiting: how many bytes went (0:
        none, use :meth:`send`). Only while nothing else is being sent (the connection's
        writer is idle), so messages stay in order."""
        write = self._write_now
        if write is None or self._closed:
            return 0
        return write(data)

    async def receive(self) -> bytes:
        try:
            return await self._stdout.receive(READ_CHUNK)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise anyio.EndOfStream from None

    async def exit_info(self) -> tuple[int | None, str]:
        with anyio.CancelScope(shield=True), anyio.move_on_after(EXIT_REPORT_WAIT):
            await self._process.wait()
            await self._stderr_done.wait()
        return self._process.returncode, self._stderr.text()

    def _signal_group(self, sig: int) -> None:
        if sys.platform == "win32":  # pragma: no cover
            if sig == signal.SIGTERM:
                self._process.terminate()
            else:
                self._process.kill()
            return
        try:
            os.killpg(self._process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def abort(self) -> None:
        """The runtime stopped answering (a stopped or wedged process): :meth:`aclose` then
        kills it at once instead of sitting out both grace periods, which a stopped process
        cannot use. SIGKILL ends a stopped process as well (no SIGCONT needed)."""
        self._aborted = True

    async def aclose(self) -> None:
        """Stop the process and everything it started; shielded and bounded at every step."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            # Descendants in sessions of their own are found while their parent lives.
            await self._reaper.snapshot()
            if not self._aborted:
                await self._stop_politely()
            # Also reaps what the runtime started (shell commands) if they outlived it.
            self._signal_group(signal.SIGKILL)
            await self._process.wait()
            await run_stop_command(self._config)
            await self._reaper.reap()
            with anyio.move_on_after(EXIT_REPORT_WAIT):
                await self._stderr_done.wait()
            await self._process.aclose()

    async def _stop_politely(self) -> None:
        """Close stdin (the runtime exits on EOF), wait; SIGTERM the group, wait."""
        try:
            await self._stdin.aclose()
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        with anyio.move_on_after(STDIN_CLOSE_GRACE):
            await self._process.wait()
        if self._process.returncode is None:
            self._signal_group(signal.SIGTERM)
            with anyio.move_on_after(TERMINATE_GRACE):
                await self._process.wait()
        if self._process.returncode is None:
            logger.warning("app-server %d ignored SIGTERM; killing it", self._process.pid)


async def run_stop_command(config: CodexConfig) -> None:
    """Run ``config.stop_command`` (if any) to end what a sandbox still holds; bounded by
    :data:`STOP_COMMAND_TIMEOUT`, shielded, and never raising: it runs while the client
    closes, where an error would hide the one that closed it."""
    argv = config.stop_command
    if not argv:
        return
    shown = redact_text(shlex.join(argv))
    with anyio.CancelScope(shield=True):
        try:
            with anyio.fail_after(STOP_COMMAND_TIMEOUT):
                result = await anyio.run_process(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    env=config.environment(),
                    check=False,
                )
        except TimeoutError:
            logger.warning("stop command %s took over %g s", shown, STOP_COMMAND_TIMEOUT)
            return
        except OSError as exc:
            logger.warning("stop command %s could not run: %s", shown, exc)
            return
    if result.returncode:
        stderr = result.stderr.decode("utf-8", "replace").strip()[-500:]
        logger.warning("stop command %s exited with %d: %s", shown, result.returncode, stderr)


def _check_trust_store(config: CodexConfig) -> None:
    """A bundle that is not there would leave the runtime trusting nothing: say so now."""
    store = config.trust_store
    if store not in ("system", "minimal") and not os.path.isfile(store):
        raise StartupError(
            f"the trust store {os.fspath(store)!r} (CodexConfig.trust_store) is not a file; "
            "give a PEM bundle, 'minimal' or 'system'"
        )


async def open_runtime_process(
    config: CodexConfig, argv: list[str], *, stdin: int, stdout: int
) -> tuple[anyio.abc.Process, str]:
    """Start ``argv`` (a ``codex`` command line) as ``config`` says: in a session of its own,
    its environment carrying a fresh reaper marker; returns (process, marker).

    :raises CodexNotFoundError: if the executable does not exist (also a FileNotFoundError).
    :raises StartupError: if it cannot be started otherwise; the message names the path.
    """
    _check_trust_store(config)
    env = config.environment()
    marker = env[MARKER_ENV] = new_marker()
    try:
        process = await anyio.open_process(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            cwd=config.cwd,
            env=env,
            start_new_session=sys.platform != "win32",
        )
    except FileNotFoundError as exc:
        what = "the app-server" if config.command is None else "the sandbox command"
        error = CodexNotFoundError(f"could not start {what} {argv[0]!r}: {exc}")
        error.filename = argv[0]
        raise error from exc
    except OSError as exc:
        raise StartupError(f"could not start the app-server {argv[0]!r}: {exc}") from exc
    return process, marker


async def spawn_stdio(
    config: CodexConfig, *, stderr_tail_bytes: int = DEFAULT_STDERR_TAIL_BYTES
) -> StdioTransport:
    """Start the app-server described by ``config``, on stdio.

    :raises StartupError: if the executable cannot be started at all (missing, not
        executable); the message names the path and the reason.
    """
    process, marker = await open_runtime_process(
        config, config.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    return StdioTransport(
        process, stderr_tail_bytes=stderr_tail_bytes, marker=marker, config=config
    )
