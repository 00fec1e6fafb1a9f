"""One pool member's record: its runtime while it runs, its load, its restart history.

Shared by the pool (which owns and mutates it) and its pooled threads (which read which member
holds them and whether its runtime is still the one the thread was started on).
"""

from __future__ import annotations

from collections import deque

import anyio
import attrs

from .._api._codex import AsyncCodex
from .._exceptions import RestartsExhaustedError
from ._accounts import Account

__all__ = ["Member"]


@attrs.define(eq=False)
class Member:
    """One member of a pool: its runtime (while it runs), its load and its restarts."""

    index: int
    account: Account = attrs.field(kw_only=True)
    """The account (``CODEX_HOME`` and login) it runs on, shared with the other members of
    that account: a usage limit pauses them all."""
    codex: AsyncCodex | None = None
    home: str | None = None
    """The ``CODEX_HOME`` its runtime keeps threads in (``CodexConfig.home()``, None until its
    first start), set at each start from its config: where ``thread_resume`` looks."""
    starts: int = 0
    open_threads: int = 0
    running_turns: int = 0
    threads_started: int = 0
    retiring: bool = False
    turn_slots: anyio.Semaphore | None = None
    first_ready: anyio.Event = attrs.field(factory=anyio.Event)
    restart_times: deque[float] = attrs.field(factory=deque)
    given_up: RestartsExhaustedError | None = None

    @property
    def pid(self) -> int | None:
        if self.codex is None:
            return None
        try:
            client = self.codex.client
        except RuntimeError:
            return None
        # AsyncCodex does not expose its process id; the stdio transport knows it.
        pid = getattr(getattr(client, "_transport", None), "pid", None)
        return pid if isinstance(pid, int) else None

    @property
    def ready(self) -> bool:
        """Its runtime is up and its connection open (a dead one is noticed at once, before
        the supervisor has closed it)."""
        if self.codex is None:
            return False
        try:
            return not self.codex.client.closed
        except RuntimeError:
            return False

    @property
    def idle(self) -> bool:
        return self.open_threads == 0 and self.running_turns == 0
