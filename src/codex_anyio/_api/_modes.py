"""``ApprovalMode`` and ``Sandbox``: the official SDK's two presets, and their wire params.

The official ``openai_codex`` exposes these two enums instead of the raw ``approval_policy``
and ``sandbox``/``sandbox_policy`` fields; programs written for it pass
``approval_mode=ApprovalMode.deny_all`` or ``sandbox=Sandbox.workspace_write``. Here they are
one more way to say the same thing: the raw fields stay accepted, and a preset only fills the
fields it stands for.

One difference on purpose: the official ``thread_start`` sends ``ApprovalMode.auto_review``
when no mode is given. We send nothing (the runtime's configured policy applies) and our
client declines any approval it is asked for unless a handler says otherwise; see
``docs/migrating.md``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

__all__ = [
    "ApprovalMode",
    "Sandbox",
    "approval_mode_params",
    "sandbox_mode",
    "sandbox_policy",
]


class ApprovalMode(str, Enum):
    """How escalated permission requests are decided.

    ``deny_all``: the runtime never asks (``approval_policy="never"``); anything that would
    need approval is refused. ``auto_review``: the runtime asks (``on-request``) and its
    automatic reviewer decides (``approvals_reviewer="auto_review"``).
    """

    deny_all = "deny_all"
    auto_review = "auto_review"


class Sandbox(str, Enum):
    """Filesystem access presets for threads and turns (the official names and values)."""

    read_only = "read-only"
    workspace_write = "workspace-write"
    full_access = "full-access"


_SANDBOX_MODES = frozenset({"read-only", "workspace-write", "danger-full-access"})


def _coerce(enum: type[Enum], value: Any, what: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        options = ", ".join(f"{enum.__name__}.{member.name}" for member in enum)
        raise ValueError(f"{what} must be one of: {options}") from None


def approval_mode_params(mode: ApprovalMode | str | None) -> dict[str, Any]:
    """The ``approval_policy`` / ``approvals_reviewer`` keywords a mode stands for."""
    if mode is None:
        return {}
    match _coerce(ApprovalMode, mode, "approval_mode"):
        case ApprovalMode.deny_all:
            return {"approval_policy": "never"}
        case _:
            return {"approval_policy": "on-request", "approvals_reviewer": "auto_review"}


def sandbox_mode(sandbox: Sandbox | str | None) -> str | None:
    """The thread-level ``sandbox`` wire value (``SandboxMode``) for a preset."""
    if sandbox is None:
        return None
    if not isinstance(sandbox, Sandbox) and sandbox in _SANDBOX_MODES:
        return sandbox  # already a wire value ("danger-full-access", ...)
    preset = _coerce(Sandbox, sandbox, "sandbox")
    return "danger-full-access" if preset is Sandbox.full_access else str(preset.value)


def sandbox_policy(sandbox: Sandbox | str | None) -> dict[str, Any] | None:
    """The turn-level ``sandbox_policy`` wire value (``SandboxPolicy``) for a preset."""
    if sandbox is None:
        return None
    kind = {
        Sandbox.read_only: "readOnly",
        Sandbox.workspace_write: "workspaceWrite",
        Sandbox.full_access: "dangerFullAccess",
    }[_coerce(Sandbox, sandbox, "sandbox")]
    return {"type": kind}
