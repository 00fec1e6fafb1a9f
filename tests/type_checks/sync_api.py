"""Type-checked, never run (``nox -s typecheck``): the sync client's methods carry the async
ones' real signatures, so misuse is a type error. A ``type: ignore`` that stops being needed
fails the check too (``warn_unused_ignores``)."""

from __future__ import annotations

from collections.abc import Iterator

from codex_anyio import (
    ApprovalMode,
    Codex,
    Notification,
    Sandbox,
    SyncThread,
    SyncTurnHandle,
    TokenUsage,
    TurnResult,
    TurnUsage,
)
from codex_anyio.types import RateLimitSnapshot, ThreadReadResponse, TurnSteerResponse


def uses(codex: Codex) -> None:
    thread: SyncThread = codex.thread_start(
        approval_mode=ApprovalMode.deny_all, sandbox=Sandbox.read_only, ephemeral=True
    )
    handle: SyncTurnHandle = thread.turn("hi", effort="high", source="typing")
    steered: TurnSteerResponse = handle.steer("more")
    events: Iterator[Notification] = handle.stream()
    result: TurnResult = thread.run("again", timeout=5.0)
    read: ThreadReadResponse = thread.read(include_turns=True)
    resumed: SyncThread = codex.thread_resume(thread.id, include_turns=False)
    turn_usage: TurnUsage = result.usage
    spent: TokenUsage = turn_usage + thread.usage() + codex.usage() + handle.usage
    limits: RateLimitSnapshot | None = codex.rate_limits
    del steered, events, result, read, resumed, spent, limits


def misuses(codex: Codex, thread: SyncThread) -> None:
    thread.turn(42)  # type: ignore[arg-type]
    codex.thread_resume()  # type: ignore[call-arg]
    codex.thread_archive(thread)  # type: ignore[arg-type]
    thread.usage() + 1  # type: ignore[operator]
