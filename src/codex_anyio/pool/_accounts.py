"""A pool's accounts: which members share a login, and whether each may take new turns.

A usage limit belongs to an account (a ``CODEX_HOME`` with its own login), not to a process:
once the service answers one member ``usage_limit_reached``, every member on that account
would get the same answer until the window resets, each failing at once. So the pool pauses
the account: its members take no new turn until the reset time, the others keep serving,
and work that hit the limit is placed again on an account with headroom.

Two things pause an account, both read from what the runtime reports:

- a turn that failed with the usage limit (:class:`~codex_anyio.UsageLimitError`): paused
  until its ``resets_at`` (:data:`UNKNOWN_RESET_PAUSE` seconds if the service gave none);
- a rate-limit snapshot (``account/rateLimits/updated``, which the runtime sends after every
  model response) with a window used at or above the pool's threshold (95 % by default):
  paused until that window resets, before the limit is hit. A window that says nothing of its
  reset pauses nothing: there is no moment to resume at.

Times are wall-clock (``time.time()``): reset times are the service's Unix seconds.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Final, NamedTuple

import attrs

from .._exceptions import UsageLimitError
from .._rpc._usage import RateLimits, utc_datetime

__all__ = [
    "DEFAULT_RATE_LIMIT_THRESHOLD",
    "STALE_RESET_PAUSE",
    "UNKNOWN_RESET_PAUSE",
    "Account",
    "AccountPaused",
    "AccountStatistics",
    "account_homes",
    "describe_pause",
    "limit_pause",
    "window_pause",
]

DEFAULT_RATE_LIMIT_THRESHOLD: Final = 95.0
"""Percent of a rate-limit window above which an account gets no new turn until the window
resets (``CodexPool(rate_limit_threshold=...)``): the turns already running finish within
what is left, instead of each new one failing at the limit."""

UNKNOWN_RESET_PAUSE: Final = 300.0
"""Seconds an account is paused after a usage limit whose reset time the service did not
report: then one turn tries again."""


STALE_RESET_PAUSE: Final = 30.0
"""Seconds an account is paused after a usage limit whose reported reset time has already
passed here (this machine's clock is behind the service's)."""


class AccountPaused(Exception):
    """Internal: a thread's account was paused before its first turn was sent, and the
    thread is ``replaceable`` (its caller places the work again: ``pool.run``, the batch).
    Nothing ran on it, so the work moves to an account with headroom instead of waiting."""


class AccountStatistics(NamedTuple):
    account: int
    codex_home: str | None
    """The account's ``CODEX_HOME`` (None: the members' own configuration decides)."""
    members: tuple[int, ...]
    paused_until: datetime | None
    """When the account takes turns again (aware UTC), or None if it is not paused."""
    reason: str
    """Why it is paused ("usage limit reached", "96 % of its 300-minute window used"), or ""."""
    usage_limits: int
    """Turns that failed on it with the usage limit since the pool started."""


@attrs.define(eq=False)
class Account:
    """One account of a pool and its pause (see the module docstring)."""

    index: int
    home: str | None
    paused_until: float | None = None
    reason: str = ""
    usage_limits: int = 0

    def paused(self, now: float | None = None) -> bool:
        until = self.paused_until
        return until is not None and (time.time() if now is None else now) < until

    def pause(self, until: float, reason: str) -> bool:
        """Pause until ``until`` (a pause only ever grows: an older, shorter report does not
        end a longer one). True if this starts or extends the pause."""
        if self.paused() and self.paused_until is not None and until <= self.paused_until:
            return False
        self.paused_until = until
        self.reason = reason
        return True

    def describe(self) -> str:
        assert self.paused_until is not None
        return describe_pause(self.index, self.paused_until, self.reason)

    def statistics(self, members: tuple[int, ...]) -> AccountStatistics:
        paused = self.paused()
        return AccountStatistics(
            account=self.index,
            codex_home=self.home,
            members=members,
            paused_until=utc_datetime(self.paused_until)
            if paused and self.paused_until is not None
            else None,
            reason=self.reason if paused else "",
            usage_limits=self.usage_limits,
        )


def describe_pause(account: int, until: float, reason: str) -> str:
    """``paused until 14:05 (account 1: usage limit reached)``, in local time: how a
    pause reads in a log line, an error and the progress display."""
    clock = time.strftime("%H:%M", time.localtime(until))
    return f"paused until {clock} (account {account}: {reason})"


def account_homes(accounts: object) -> list[str | None]:
    """The homes of ``CodexPool(accounts=...)``: None (one account, the members' own
    configuration) or a non-empty sequence of folders."""
    if accounts is None:
        return [None]
    if isinstance(accounts, (str, bytes, os.PathLike)):
        raise TypeError("accounts is a list of CODEX_HOME folders, not one folder")
    homes = [os.fspath(home) for home in accounts]  # type: ignore[attr-defined]
    if not homes:
        raise ValueError("accounts must name at least one CODEX_HOME")
    if len(set(homes)) != len(homes):
        raise ValueError("accounts names the same CODEX_HOME twice")
    return homes


def limit_pause(exc: UsageLimitError, now: float) -> tuple[float, str]:
    """How long a usage limit pauses its account: until its reset, if still ahead."""
    resets = exc.resets_at.timestamp() if exc.resets_at is not None else None
    if resets is None:
        return now + UNKNOWN_RESET_PAUSE, "usage limit reached, reset time unknown"
    if resets <= now:
        # The service says it has reset, yet refused: a clock behind the service's.
        return now + STALE_RESET_PAUSE, "usage limit reached, reset time passed"
    return resets, "usage limit reached"


def window_pause(limits: RateLimits, threshold: float, now: float) -> tuple[float, str] | None:
    """The pause a rate-limit snapshot asks for: until the latest reset of the windows used
    at or above ``threshold`` percent whose reset is still ahead; None if there is none."""
    found: tuple[float, str] | None = None
    for used, resets, minutes in limits.windows():
        if used < threshold or resets is None or resets <= now:
            continue
        if found is None or resets > found[0]:
            window = f"its {minutes}-minute window" if minutes else "a window"
            found = (float(resets), f"{used:g} % of {window} used")
    return found
