"""The runtime's approval requests answered by Inspect's approvers.

When the runtime asks to run a command or change files (``item/commandExecution/
requestApproval``, ``item/fileChange/requestApproval``, and the older ``execCommandApproval``
and ``applyPatchApproval``), the request becomes an Inspect ``ToolCall`` that goes through the
eval's approval chain, exactly as a tool call of Inspect's own does: a command is a call of
``bash`` (``cmd``, ``cwd``, ``reason``), a file change a call of ``apply_patch`` (``changes``,
``reason``, ``grant_root``), each with a readable ``ToolCallView``, so an approval policy
names them as it names any tool (``tools="bash"``) and each decision is an ``ApprovalEvent``
of the sample.

The entry point is ``apply_tool_approval`` (``inspect_ai.approval._apply``): the one Inspect's
``execute_tools`` and its own agent bridge call. It walks the matching approvers (an
``escalate`` passes to the next, as in Inspect's chain; none left is a rejection), records
each decision, and keeps the time an approver takes off the sample's working limit. Inspect
exports no public equivalent; ``have_tool_approval`` from the same module says whether any
approver is active.

The decision, mapped onto the runtime's answers:

* ``approve``: accept (``accept`` / ``approved``);
* ``reject``: decline, and the turn goes on (the v2 answer carries no text, so the model
  learns only that it was declined; the older requests pass the explanation as the
  ``denied`` rejection);
* ``modify``: declined like a rejection, because the runtime cannot run a modified command
  or patch; the explanation says so;
* ``terminate``: ``cancel`` / ``abort`` (the runtime interrupts the turn), and the agent
  raises Inspect's ``TerminateSampleError`` once the turn has ended, so the sample ends as
  ``operator`` limited. An approver that raises ends the turn the same way, and the agent
  re-raises its error.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Sequence
from typing import Any

import anyio
import attrs
from inspect_ai.approval import Approval

try:  # Inspect's own approval entry point and its sample-ending error: not public API
    from inspect_ai._util.exception import TerminateSampleError
    from inspect_ai.approval._apply import apply_tool_approval, have_tool_approval
except ImportError as exc:  # pragma: no cover - only with an Inspect that moved them
    import inspect_ai

    raise ImportError(
        "codex_anyio.inspect answers the runtime's approvals through Inspect AI's own "
        "approval entry point (inspect_ai.approval._apply.apply_tool_approval), which "
        f"inspect_ai {getattr(inspect_ai, '__version__', '?')} does not have ({exc}); "
        "install the inspect_ai version codex-anyio was tested with (see its CHANGELOG)"
    ) from None
from inspect_ai.model import ChatMessage
from inspect_ai.tool import ToolCall, ToolCallContent, ToolCallView

from .._api._dispatch import Handlers
from .._rpc._server_requests import ServerRequest

__all__ = [
    "COMMAND_TOOL",
    "FILE_CHANGE_TOOL",
    "InspectApprovals",
    "have_tool_approval",
    "with_approvals",
]

COMMAND_TOOL = "bash"
"""The tool name a command the runtime asks to run is approved as (Inspect's own shell tool
is ``bash`` too, so a policy written for it applies)."""

FILE_CHANGE_TOOL = "apply_patch"
"""The tool name a file change the runtime asks to make is approved as."""

CHANGES_WAIT = 5.0
"""How long (s) a file-change request waits for its ``fileChange`` item to be seen.

The request names only the item; the changes come in the item's ``item/started``, which the
runtime sends first but the agent's turn consumer may not have read yet. Past this bound the
approver sees the request without the changes, rather than the turn stalling."""

_ANSWERS = {
    # method: (approve, decline, cancel)
    "item/commandExecution/requestApproval": ("accept", "decline", "cancel"),
    "item/fileChange/requestApproval": ("accept", "decline", "cancel"),
    "execCommandApproval": ("approved", "denied", "abort"),
    "applyPatchApproval": ("approved", "denied", "abort"),
}

_LEGACY = frozenset({"execCommandApproval", "applyPatchApproval"})

MODIFY_DECLINED = (
    "An approver modified this call, but the Codex runtime cannot run a modified command "
    "or patch, so it was declined."
)
TERMINATED = "Tool call approver requested termination."

_ids = itertools.count(1)


class InspectApprovals:
    """Answers one sample's approval requests with the active Inspect approvers.

    :param history: the sample's conversation, given to each approver as ``history``.
    """

    def __init__(self, history: Sequence[ChatMessage]) -> None:
        self.history = list(history)
        self.failure: BaseException | None = None
        """Why the sample must end (a ``terminate`` decision, an approver's error), raised by
        the agent after the turn; None: it goes on."""
        self._changes: dict[str, Any] = {}
        self._seen = anyio.Event()

    def see(self, item: Any) -> None:
        """Keep a ``fileChange`` item's changes (from ``item/started``) for its approval."""
        if isinstance(item, dict) and item.get("type") == "fileChange" and "id" in item:
            self._changes[str(item["id"])] = item.get("changes") or []
            self._seen.set()
            self._seen = anyio.Event()

    def handlers(self) -> dict[str, Any]:
        """Raw handlers by method for every approval request this maps."""
        return dict.fromkeys(_ANSWERS, self.answer)

    async def answer(self, request: ServerRequest) -> dict[str, Any]:
        """Submit ``request`` to the approvers and return the runtime's answer."""
        call = await self._tool_call(request)
        yes, no, cancel = _ANSWERS[request.method]
        try:
            approved, approval = await apply_tool_approval(
                str(call.arguments.get("reason") or ""), call, _view, self.history
            )
        except Exception as exc:
            self._fail(exc)
            return {"decision": cancel}
        if approval is not None and approval.decision == "terminate":
            self._fail(TerminateSampleError(_with_explanation(TERMINATED, approval)))
            return {"decision": cancel}
        if approved and (approval is None or approval.modified is None):
            return {"decision": yes}
        explanation = MODIFY_DECLINED if approved else _explanation(approval, call)
        if request.method in _LEGACY:
            return {"decision": {no: {"rejection": explanation}}}
        return {"decision": no}

    def _fail(self, failure: BaseException) -> None:
        if self.failure is None:
            self.failure = failure

    async def _tool_call(self, request: ServerRequest) -> ToolCall:
        raw = request.raw
        arguments: dict[str, Any]
        if request.method in ("item/commandExecution/requestApproval", "execCommandApproval"):
            command = raw.get("command")
            if isinstance(command, list):
                command = shlex.join(str(part) for part in command)
            arguments = {"cmd": str(command or ""), "cwd": raw.get("cwd")}
            function = COMMAND_TOOL
        else:
            changes = raw.get("fileChanges")
            if changes is None:
                changes = await self._item_changes(str(raw.get("itemId")))
            arguments = {"changes": changes, "grant_root": raw.get("grantRoot")}
            function = FILE_CHANGE_TOOL
        arguments["reason"] = raw.get("reason")
        return ToolCall(
            id=_call_id(raw),
            function=function,
            arguments={k: v for k, v in arguments.items() if v is not None},
        )

    async def _item_changes(self, item_id: str) -> Any:
        with anyio.move_on_after(CHANGES_WAIT):
            while item_id not in self._changes:
                await self._seen.wait()
        return self._changes.get(item_id)


def _call_id(raw: dict[str, Any]) -> str:
    """The item (or the older requests' call) the request is about, so the
    ``ApprovalEvent`` names the ``commandExecution``/``fileChange`` item of the transcript."""
    for key in ("approvalId", "itemId", "callId"):
        value = raw.get(key)
        if isinstance(value, str) and value:
            return value
    return f"codex_anyio_approval_{next(_ids)}"


def _explanation(approval: Approval | None, call: ToolCall) -> str:
    if approval is not None and approval.explanation:
        return approval.explanation
    return f"The approval policy rejected this {call.function} call."


def _with_explanation(text: str, approval: Approval) -> str:
    return f"{text} {approval.explanation}" if approval.explanation else text


def _view(call: ToolCall) -> ToolCallView:
    """What an approver (a human included) is shown: the command, or the changes."""
    reason = call.arguments.get("reason")
    context = ToolCallContent(format="text", content=str(reason)) if reason else None
    if call.function == COMMAND_TOOL:
        cwd = call.arguments.get("cwd")
        body = f"```bash\n{call.arguments.get('cmd', '')}\n```"
        title = f"Codex runs a command in {cwd}" if cwd else "Codex runs a command"
    else:
        body = _changes_markdown(call.arguments.get("changes"))
        title = "Codex changes files"
    return ToolCallView(
        context=context, call=ToolCallContent(title=title, format="markdown", content=body)
    )


def _changes_markdown(changes: Any) -> str:
    """The changes as markdown: one diff block per file (v2 items list ``{path, kind, diff}``;
    the older requests map a path to ``{type, content | unified_diff}``)."""
    if isinstance(changes, dict):
        changes = [{"path": path, **(change or {})} for path, change in changes.items()]
    if not isinstance(changes, list) or not changes:
        return "(the changes were not reported)"
    parts = []
    for change in changes:
        if not isinstance(change, dict):
            continue
        kind = change.get("kind") or change.get("type") or ""
        if isinstance(kind, dict):
            kind = kind.get("type", "")
        diff = change.get("diff") or change.get("unified_diff") or change.get("content") or ""
        parts.append(f"{kind} `{change.get('path', '?')}`\n```diff\n{diff}\n```")
    return "\n\n".join(parts)


def with_approvals(handlers: Handlers | None, approvals: InspectApprovals) -> Handlers:
    """``handlers`` with ``approvals`` answering every approval request it does not answer
    itself: what the caller sets wins."""
    base = handlers or Handlers()
    ours = {m: h for m, h in approvals.handlers().items() if base.find(m) is None}
    return attrs.evolve(base, by_method={**ours, **base.by_method})
