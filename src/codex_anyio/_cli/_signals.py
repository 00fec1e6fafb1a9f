"""The signal policy of the commands that run until stopped (``demo``, ``serve``, ``login``).

SIGINT (Ctrl-C), SIGTERM (what ``kill``, ``timeout``, ``docker stop`` and systemd send) and
SIGHUP (a closed terminal) all stop a command the same way: the command's scope is cancelled,
the structured clean-up below it runs (turns interrupted, the runtime and everything it
started stopped, temporary files removed: each step shielded and bounded by the library), and
only then does the command exit, with the conventional status ``128 + signum`` (130, 143,
129). Python's defaults would not: SIGTERM and SIGHUP end the process at once, leaving the
runtime (in a session of its own) running with its token, reparented to init.

No signal can end the process half-way through the clean-up and leave the rest behind:

- the receiver stays installed until the clean-up has finished, so a second signal meanwhile
  waits in it unhandled instead of taking its default action;
- around the event loop a handler of ours only records a signal: one that arrives while the
  loop starts stops the command as soon as the receiver is there, and one Trio re-delivers
  when its receiver closes (it re-raises what was left pending in it) is ignored, where the
  default action would end a cleanly stopped process with "killed by SIGTERM".

A signal this process was told to ignore (``nohup`` ignores SIGHUP) stays ignored.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import anyio

from .._groups import call_unwrapped

__all__ = ["STOP_SIGNALS", "Stop", "run_until_stopped"]

STOP_SIGNALS: Final[tuple[signal.Signals, ...]] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""The signals that stop a command, each with its clean-up (130, 143, 129)."""


class Stop:
    """How a stop signal reaches a command: it cancels the command's whole body, or first the
    innermost block marked :meth:`here`.

    A body whose clean-up needs what encloses it marks the part to stop: ``codex-anyio login``
    waits for a login inside ``here()``, so a signal cancels the wait while the client still
    runs, and the login can be cancelled on the runtime (a shielded request needs the client's
    reader, which cancelling the whole body would stop too). Once that block is left, the rest
    of the body is cancelled as well.
    """

    def __init__(self, command: anyio.CancelScope) -> None:
        self._scopes = [command]
        self.signum: int | None = None
        """The signal that stopped the command (None: none did)."""

    def stop(self, signum: int) -> None:
        self.signum = signum
        self._scopes[-1].cancel()

    @contextmanager
    def here(self) -> Iterator[None]:
        """A stop signal cancels this block first (its clean-up runs with everything around
        it intact), then the rest of the command."""
        with anyio.CancelScope() as scope:
            self._scopes.append(scope)
            try:
                yield
            finally:
                self._scopes.remove(scope)
        if self.signum is not None:
            self._scopes[-1].cancel()


class _Recorder:
    """The handler around the event loop: records a stop signal, for ``_stoppable`` to act on
    (one that came while the loop started) or to ignore (one re-delivered at the end)."""

    def __init__(self, signals: tuple[signal.Signals, ...]) -> None:
        self.signals = signals
        self.caught: list[int] = []
        self.stopped = False
        """A signal stopped the command (through the receiver or recorded here)."""
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: object) -> None:
        self.caught.append(signum)

    def install(self) -> None:
        for signum in self.signals:
            previous = signal.signal(signum, self)
            self._previous.setdefault(signum, previous)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


async def _stoppable(main: Callable[[Stop], Awaitable[int]], recorder: _Recorder) -> int:
    with anyio.open_signal_receiver(*recorder.signals) as signals:
        async with anyio.create_task_group() as tg:
            stop = Stop(tg.cancel_scope)

            async def on_signal() -> None:
                async for signum in signals:
                    stop.stop(signum)
                    return

            tg.start_soon(on_signal)
            if recorder.caught:  # it came while the event loop started: stop at once
                stop.stop(recorder.caught[0])
            status = await main(stop)
            tg.cancel_scope.cancel()
        # Still inside the receiver: every signal that arrived during the clean-up is here,
        # unhandled, rather than having killed the process.
    # asyncio's receiver leaves the default actions behind it: back to recording.
    recorder.install()
    recorder.stopped = stop.signum is not None
    return status if stop.signum is None else 128 + stop.signum


def run_until_stopped(main: Callable[[Stop], Awaitable[int]], *, backend: str = "asyncio") -> int:
    """Run ``main(stop)`` (a command's body, returning its exit status) in a new event loop
    until it returns, or until one of :data:`STOP_SIGNALS` arrives: then its scope (or first
    the block it marked with ``stop.here()``) is cancelled, its clean-up runs, and the status
    is ``128 + signum``.

    An error ``main`` raises propagates bare (never in an exception group of ours), for the
    caller to print as one line.
    """
    recorder = _Recorder(
        tuple(s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN)
    )
    recorder.install()
    try:
        return call_unwrapped(lambda: anyio.run(_stoppable, main, recorder, backend=backend))
    finally:
        # After a stop signal the process is on its way out: later ones stay recorded and
        # ignored, so it exits with 128 + the first one's number, not "killed by SIGTERM".
        if not recorder.caught and not recorder.stopped:
            recorder.restore()
