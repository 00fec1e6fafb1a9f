"""Lean thread settings for batch work, and merging them with a caller's own options.

What each setting buys (runtime 0.163.0, 2 cores, medians of >= 3 runs; see PROTOCOL_NOTES):

- ``features.shell_snapshot = false``: every ``thread/start`` otherwise spawns a login shell to
  snapshot the environment, and the thread's first turn waits for it (up to 10 s). Under load
  the snapshots queue: 128 concurrent new threads on one process took 38.8 s with snapshots
  (128 of 128 timed out), 5.65 s without. Snapshot shells also run in sessions of their own.
- ``ephemeral = true``: no rollout file; runtime CPU per turn 44 -> 29.5 ms and
  ``thread/start`` ~25 -> ~5 ms. The price: an ephemeral thread cannot be resumed, archived or
  unloaded; it holds ~0.9 MB in its runtime until the process exits (``CodexPool``'s
  ``recycle_after`` restarts a member after so many threads to give that memory back).
- Features a batch does not use off (multi_agent, skill_search, tool_suggest, hooks,
  workspace_dependencies, goals): ~15 % less runtime CPU per turn.

And the notifications a one-shot task does not read (:func:`result_only_opt_outs`, for
``CodexConfig.opt_out_notification_methods``): 8 of the 13 lines of a one-turn task, ~2.3 ms of
runtime CPU per task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._protocol._generated.registry import NOTIFICATIONS
from .._rpc._connection import CONNECTION_READS
from ._account import LOGIN_COMPLETED
from ._turn import OBSERVED

__all__ = [
    "LEAN_FEATURES_OFF",
    "CLIENT_READS",
    "lean_thread_options",
    "merge_options",
    "result_only_opt_outs",
]

LEAN_FEATURES_OFF: tuple[str, ...] = (
    "shell_snapshot",
    "multi_agent",
    "skill_search",
    "tool_suggest",
    "hooks",
    "workspace_dependencies",
    "goals",
)
"""Runtime features the lean preset turns off."""


def lean_thread_options(
    *,
    ephemeral: bool = True,
    shell_snapshot: bool = False,
    unused_features: bool = False,
) -> dict[str, Any]:
    """``thread_start`` keywords for cheap one-shot threads (a fresh dict each call).

    ``await codex.thread_start(**lean_thread_options())``; see this module's docstring for
    what each setting buys. ``unused_features=True`` keeps the other features on.
    """
    features = {name: False for name in LEAN_FEATURES_OFF if not unused_features}
    features["shell_snapshot"] = shell_snapshot
    return {"ephemeral": ephemeral, "config": {"features": features}}


def merge_options(defaults: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` over ``defaults``; nested dicts (``config``) are merged key by key."""
    merged = dict(defaults)
    for key, value in options.items():
        base = merged.get(key)
        if isinstance(base, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_options(base, value)
        else:
            merged[key] = value
    return merged


CLIENT_READS: frozenset[str] = OBSERVED | CONNECTION_READS | {LOGIN_COMPLETED}
"""The notifications the client reads itself (a turn's :class:`TurnResult`, the connection's
own, a login's end): never opted out (``CodexConfig.opt_out_notification_methods``)."""


def result_only_opt_outs() -> tuple[str, ...]:
    """Every notification method of the pinned schema that a ``TurnResult`` does not need:
    ``CodexConfig(opt_out_notification_methods=result_only_opt_outs())`` for a client whose
    turns are only ``run()`` (``codex-anyio batch`` uses it). Streams and subscriptions on
    such a client see only ``turn/completed``, ``item/completed``,
    ``thread/tokenUsage/updated``, ``error``, ``serverRequest/resolved`` and
    ``account/rateLimits/updated``; with telemetry on, ``item/started`` too."""
    return tuple(sorted(method for method in NOTIFICATIONS if method not in CLIENT_READS))
