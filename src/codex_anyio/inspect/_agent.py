"""``codex_agent()``: the Codex runtime as an Inspect agent, one runtime per sample.

Per sample: the runtime starts (on the host, in the working folder of the sample's sandbox,
or wherever ``config.command`` puts it: ``docker exec -i ...``), its model provider pointed
at a :class:`~codex_anyio.ModelGateway` whose policy calls the model Inspect evaluates
(``_policy``); the sample's input is one turn on an ephemeral thread, with the Inspect tools
as dynamic tools (``_tools``); each completed item goes to the transcript (``_transcript``);
the final response becomes the completion. Inspect's time limits cancel the agent, which
interrupts the turn on the server before the runtime is closed (as every cancelled turn of
this client is); a token limit hit in a model call does the same, then raises Inspect's
error. With approvers active (the eval's, or the agent's ``approval=``), the runtime's own
command and file-change approval requests go to them (``_approvals``).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
from inspect_ai.agent import Agent, AgentState, agent
from inspect_ai.approval import ApprovalPolicy
from inspect_ai.approval import approval as approval_scope
from inspect_ai.model import ChatMessageSystem, ChatMessageUser, Model, ModelOutput, get_model
from inspect_ai.tool import Tool, ToolDef
from inspect_ai.util import sandbox as sample_sandbox

from .._api._codex import AsyncCodex
from .._api._dispatch import Handlers
from .._api._thread import Thread
from .._wire._config import CodexConfig
from ..gateway._gateway import ModelGateway
from ._approvals import InspectApprovals, have_tool_approval, with_approvals
from ._policy import InspectModelPolicy
from ._tools import dynamic_tools
from ._transcript import record_item, record_turn

__all__ = ["codex_agent"]

HERMETIC_CONFIG = """\
# Written by codex_anyio.inspect: nothing at start-up may reach the network.
[features]
plugins = false
remote_plugin = false
apps = false
shell_snapshot = false
"""
"""The ``config.toml`` of a sample's own ``CODEX_HOME``: the plugin and app features would
fetch from the network at start-up, and the shell snapshot runs the user's login shell for
every thread (up to 10 s)."""

ASK_EVERY_COMMAND = "untrusted"
"""The thread's ``approval_policy`` with approvers active: runtime 0.163.0 then asks before
every command (``pwd`` included), as Inspect submits every tool call to its approvers.
(``"on-request"`` asks only for what would leave the runtime's sandbox; ``config.toml``
rejects ``"untrusted"`` in this version, but ``thread/start`` takes it.)"""


async def _sandbox_cwd(name: str | None) -> str | None:
    """The working folder of the sample's sandbox (``pwd`` in it); None without a sandbox."""
    try:
        environment = sample_sandbox(name)
    except ProcessLookupError:
        return None
    result = await environment.exec(["pwd"])
    folder = result.stdout.strip()
    return folder if result.success and folder else None


def _prompt(state: AgentState) -> tuple[str, str | None]:
    """The turn's text (the user messages) and the developer instructions (the system
    messages) of the sample's conversation so far."""
    users = [m.text for m in state.messages if isinstance(m, ChatMessageUser) and m.text]
    systems = [m.text for m in state.messages if isinstance(m, ChatMessageSystem) and m.text]
    return "\n\n".join(users), "\n\n".join(systems) or None


async def _serve(
    gateway: ModelGateway, *, task_status: anyio.abc.TaskStatus[anyio.CancelScope]
) -> None:
    """Run ``gateway`` shielded until the scope it reports is cancelled.

    Inspect's time limit cancels the whole sample at once: a gateway cancelled with it would
    drop the model stream the runtime is reading, and the runtime would fail the turn before
    the client's interrupt arrived. Shielded, the gateway serves on until the runtime has
    acknowledged the interrupt (dropping the stream, which cancels the pending ``generate``)
    and been closed; the agent then cancels it.
    """
    with anyio.CancelScope(shield=True) as scope:
        async with gateway.ensure_running():
            task_status.started(scope)
            await anyio.sleep_forever()


@asynccontextmanager
async def _runtime_config(config: CodexConfig, cwd: str | None) -> AsyncIterator[CodexConfig]:
    """``config`` for one sample: run in the sandbox's folder when the runtime runs on the
    host, and with a ``CODEX_HOME`` of the sample's own unless one is given."""
    if config.command is not None:
        yield config  # the runtime runs in the sandbox: its folders are the sandbox's
        return
    if config.cwd is None and cwd is not None:
        config = attrs.evolve(config, cwd=cwd)
    env = dict(config.env or {})
    if config.codex_home is not None or "CODEX_HOME" in env:
        yield config
        return
    with tempfile.TemporaryDirectory(prefix="codex-anyio-inspect-") as scratch:
        home = Path(scratch) / "codex-home"
        home.mkdir()
        (home / "config.toml").write_text(HERMETIC_CONFIG, encoding="utf-8")
        env.setdefault("CODEX_APP_SERVER_DISABLE_MANAGED_CONFIG", "1")
        yield attrs.evolve(config, codex_home=home, env=env)


async def _run_turn(
    thread: Thread, prompt: str, turn: Mapping[str, Any], approvals: InspectApprovals | None
) -> str | None:
    """Run the turn, each completed item into the transcript; its final response.

    However the turn ends (cancelled by a limit included) the status the server reported is
    recorded too: the client interrupts a cancelled turn and waits for ``turn/completed``.
    """
    handle = None
    try:
        async with thread.turn(prompt, **turn) as handle:
            async for note in handle.stream():
                if note.method == "item/completed":
                    await record_item(note.raw.get("item"))
                elif note.method == "item/started" and approvals is not None:
                    approvals.see(note.raw.get("item"))
            result = await handle.run()
        return result.final_response
    finally:
        if handle is not None and handle.done:
            record_turn(handle.id, str(handle.status))


async def _run_sample(
    config: CodexConfig,
    gateway: ModelGateway,
    handlers: Handlers | None,
    approvals: InspectApprovals | None,
    prompt: str,
    turn: Mapping[str, Any],
    thread: Mapping[str, Any],
) -> str | None:
    """One runtime, one ephemeral thread, one turn: the final response."""
    if approvals is not None:
        handlers = with_approvals(handlers, approvals)
    async with AsyncCodex(
        config, gateway=gateway, handlers=handlers, require_credentials=False
    ) as codex:
        started = await codex.thread_start(**thread)
        return await _run_turn(started, prompt, turn, approvals)


def _approval_scope(approval: Sequence[ApprovalPolicy] | None) -> AbstractContextManager[None]:
    """The agent's own approval policies for the sample, as ``execute_tools(approval=)``
    applies them: they replace the eval's; None keeps the eval's."""
    return approval_scope(list(approval)) if approval else nullcontext()


@agent
def codex_agent(
    *,
    model: str | Model | None = None,
    model_role: str | None = None,
    tools: Sequence[Tool | ToolDef] = (),
    config: CodexConfig | None = None,
    sandbox: str | None = None,
    handlers: Handlers | None = None,
    approval: Sequence[ApprovalPolicy] | None = None,
    approval_policy: str | None = None,
    sandbox_mode: str = "workspace-write",
    thread_options: Mapping[str, Any] | None = None,
    turn_options: Mapping[str, Any] | None = None,
) -> Agent:
    """The Codex runtime as an Inspect agent (also usable as a solver).

    Per sample it starts a runtime, runs the sample's input as one turn and returns the
    final response as the completion; the runtime's model calls go to Inspect's model.

    :param model: the model the runtime's calls go to (default: the model being evaluated,
        ``get_model()``); ``model_role``: a role's model instead (``get_model(role=...)``).
    :param tools: Inspect tools the model may call, as the thread's dynamic tools (run
        through ``execute_tools``: ``ToolEvent``\\s, the eval's approvers).
    :param config: how the runtime starts (default: the bundled runtime on the host, in the
        sample sandbox's working folder, with a ``CODEX_HOME`` of its own). For a docker
        sandbox, ``CodexConfig(command=["docker", "exec", "-i", CONTAINER, "codex",
        "app-server"])``: the runtime must be able to reach this process's loopback (see
        ``docs/inspect.md``).
    :param sandbox: the sample's sandbox to work in (None: the default one).
    :param handlers: answers to the runtime's requests (approvals, user input); what they
        answer is not given to Inspect's approvers.
    :param approval: approval policies for this agent (``ApprovalPolicy(approver, tools)``,
        as ``execute_tools(approval=)`` takes them), replacing the eval's for its Inspect
        tools and for the runtime's approval requests. With approvers active (these or the
        eval's), a command the runtime asks to run is approved as a ``bash`` call and a file
        change as an ``apply_patch`` call, each an ``ApprovalEvent``: ``approve`` accepts,
        ``reject`` and ``modify`` decline (the runtime cannot run a modified call) and the
        turn goes on, ``terminate`` interrupts the turn and ends the sample.
    :param approval_policy: the thread's ``approval_policy``; default ``"untrusted"`` with
        approvers active (the runtime asks before every command), else ``"never"`` (nobody
        is asked). ``"on-request"``: the approvers see only what would leave the runtime's
        sandbox.
    :param sandbox_mode: the runtime's own command sandbox (``"read-only"``,
        ``"workspace-write"``, ``"danger-full-access"`` inside a container that is the
        boundary).
    :param thread_options: more ``thread_start`` arguments (``config``, ...). ``model``
        is the name the runtime puts in its requests (default: the Inspect model's name; a
        name the runtime does not know gets its plain function tools).
    :param turn_options: more ``thread.turn`` arguments (``effort``, ``idle_timeout``, ...).
    """
    base = config or CodexConfig()
    thread_extra = dict(thread_options or {})
    turn_extra = dict(turn_options or {})

    async def execute(state: AgentState) -> AgentState:
        with _approval_scope(approval):
            return await _execute(state)

    async def _execute(state: AgentState) -> AgentState:
        chosen = get_model(model, role=model_role) if model_role else get_model(model)
        prompt, instructions = _prompt(state)
        approvals = InspectApprovals(state.messages) if have_tool_approval() else None
        policy_name = approval_policy or ("never" if approvals is None else ASK_EVERY_COMMAND)
        with anyio.CancelScope() as scope:
            policy = InspectModelPolicy(chosen, on_limit=scope.cancel)
            gateway = ModelGateway(policy, request_max_retries=0, stream_max_retries=0)
            cwd = await _sandbox_cwd(sandbox)
            thread_args = {
                "model": str(chosen),
                **thread_extra,
                "cwd": cwd,
                "dynamic_tools": dynamic_tools(tools),
                "approval_policy": policy_name,
                "sandbox": sandbox_mode,
                "developer_instructions": instructions,
                "ephemeral": True,
            }
            async with _runtime_config(base, cwd) as runtime, anyio.create_task_group() as tg:
                serving: anyio.CancelScope = await tg.start(_serve, gateway)
                try:
                    final = await _run_sample(
                        runtime, gateway, handlers, approvals, prompt, turn_extra, thread_args
                    )
                finally:
                    serving.cancel()
        if policy.limit is not None:
            raise policy.limit
        if approvals is not None and approvals.failure is not None:
            raise approvals.failure
        output = ModelOutput.from_content(model=str(chosen), content=final or "")
        state.output = output
        state.messages.append(output.message)
        return state

    return execute
