"""Threads: ``AsyncCodex.thread_start/resume/fork/...`` and the :class:`Thread` object.

Names mirror the official ``openai_codex`` async API (``thread_start``, ``thread.turn``,
``thread.run``, ``read``, ``set_name``, ``compact``). Keyword parameters map to the schema's
params by their snake_case names; the common ones are spelled out, every other field of the
params type is accepted as a keyword too and checked against the generated class, so a typo
is a ``TypeError`` here rather than a silently ignored field on the wire.
"""

from __future__ import annotations

import types
import typing
import weakref
from collections.abc import Callable, Generator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from .._protocol._generated import models as m
from .._protocol._generated.converter import converter
from .._rpc._connection import structure_result
from .._rpc._notifications import NotificationStream
from .._rpc._usage import TokenUsage, UsageLedger
from ._goal import Goal, GoalResult, check_goal_reads
from ._inputs import RunInput, to_wire_turn_input
from ._modes import ApprovalMode, Sandbox, approval_mode_params, sandbox_mode, sandbox_policy
from ._tools import DynamicTool, ToolFunction
from ._turn import TurnHandle, TurnResult

if TYPE_CHECKING:
    from .._rpc._connection import CodexClient
    from ..telemetry._telemetry import Instrumentation
    from ._credentials import CredentialsCheck
    from ._dispatch import Dispatcher, Handlers, ServerRequestQueue
    from ._model_calls import ModelCallSource

__all__ = ["CodexThreadsMixin", "Thread", "TurnStarter"]


_PLAIN: dict[Any, type] = {str: str, bool: bool, int: int, float: float}
_JSON_SCALARS = (str, int, float, bool, type(None))


def _plain_json(value: Any) -> bool:
    """Whether ``value`` is JSON made of plain dicts, lists and scalars (no model, no enum
    inside), i.e. already its wire form."""
    kind = type(value)
    if kind is dict:
        return all(type(k) is str and _plain_json(v) for k, v in value.items())
    if kind is list:
        return all(_plain_json(v) for v in value)
    return kind in _JSON_SCALARS


def _passes_as_is(field_type: Any) -> Callable[[Any], bool] | None:
    """For a field whose type needs no conversion, a check that a value is already its wire
    form; None for the others (enums, unions, models, lists of them: converted)."""
    args = [arg for arg in typing.get_args(field_type) if arg is not type(None)]
    if typing.get_origin(field_type) in (typing.Union, types.UnionType) and len(args) == 1:
        field_type = args[0]
    if field_type is Any:
        return _plain_json
    plain = _PLAIN.get(field_type)
    if plain is not None:
        return lambda value: type(value) is plain
    origin, inner = typing.get_origin(field_type), typing.get_args(field_type)
    if origin is dict and inner == (str, Any):
        return lambda value: type(value) is dict and _plain_json(value)
    if origin is dict and inner == (str, str):
        return lambda value: (
            type(value) is dict and all(type(k) is str and type(v) is str for k, v in value.items())
        )
    if origin is list and inner == (str,):
        return lambda value: type(value) is list and all(type(v) is str for v in value)
    return None


class _ParamsPlan:
    """How to turn snake_case keywords into one params type's wire dict, worked out once per
    type: each field's wire key, and whether its value can go as it is."""

    __slots__ = ("checks", "fields", "name", "types", "wire")

    def __init__(self, params_type: type) -> None:
        fields = attrs.fields(params_type)
        self.name = params_type.__name__
        self.fields = frozenset(f.name for f in fields)
        self.wire = {f.name: f.metadata.get("wire", f.name) for f in fields}
        self.types = {f.name: f.type for f in fields}
        self.checks = {f.name: _passes_as_is(f.type) for f in fields}

    def value(self, name: str, value: Any) -> Any:
        """``value`` as wire JSON: as it is when it already fits (the usual case: a string, a
        flag, a dict of config), else through the converter, which checks and converts it
        (a ``SandboxPolicy``, an enum or its string, a list of tool specs)."""
        check = self.checks[name]
        if check is not None and check(value):
            return value
        if attrs.has(type(value)):
            value = converter.unstructure(value)
        return converter.unstructure(converter.structure(value, self.types[name]))


_plans: dict[type, _ParamsPlan] = {}


def _wire_params(params_type: type, fixed: dict[str, Any], extra: dict[str, Any]) -> Any:
    """The wire params of ``params_type`` from snake_case keywords (None values dropped).

    ``extra`` are the caller's keywords: unknown ones are a ``TypeError`` naming the valid
    ones, and each value is checked against its field's type (converted where it is a typed
    object or an enum). ``fixed`` are values this module built itself (ids, the wire input),
    sent as they are. Field by field, so a lean ``thread/start`` costs a few dict operations
    rather than a structure and unstructure of the whole params object (measured: 37 -> ~3
    µs; a quarter of the client's CPU per one-turn task went to that round trip).
    """
    plan = _plans.get(params_type)
    if plan is None:
        plan = _plans[params_type] = _ParamsPlan(params_type)
    unknown = sorted(set(extra) - plan.fields) if not plan.fields.issuperset(extra) else ()
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {', '.join(unknown)} for {plan.name}; "
            f"valid: {', '.join(sorted(plan.fields))}"
        )
    wire = plan.wire
    params = {wire[k]: plan.value(k, v) for k, v in extra.items() if v is not None}
    for key, value in fixed.items():
        if value is not None:
            params[wire[key]] = converter.unstructure(value) if attrs.has(type(value)) else value
    return params


def _tools(tools: Sequence[DynamicTool | ToolFunction] | None) -> list[DynamicTool]:
    return [
        tool if isinstance(tool, DynamicTool) else DynamicTool.from_function(tool)
        for tool in tools or ()
    ]


def _thread_options(
    approval_mode: ApprovalMode | None,
    sandbox: Sandbox | str | None,
    include_turns: bool | None,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Resume/fork keywords of the official API, as the schema's fields. ``include_turns``
    only shapes the response (``excludeTurns``); the model's context is the same either way."""
    return {
        "sandbox": sandbox_mode(sandbox),
        "exclude_turns": None if include_turns is None else not include_turns,
        **approval_mode_params(approval_mode),
        **params,
    }


class TurnStarter:
    """What ``thread.turn(...)`` returns: await it for a handle, or ``async with`` it.

    ``async with thread.turn("...") as handle:`` starts the turn on entry and owns it: leaving
    the block before the turn completes interrupts it.
    """

    def __init__(self, thread: Thread, params: dict[str, Any], **options: Any) -> None:
        self._thread = thread
        self._params = params
        self._options = options
        self._handle: TurnHandle | None = None

    def __await__(self) -> Generator[Any, None, TurnHandle]:
        return self._start().__await__()

    async def _start(self) -> TurnHandle:
        codex = self._thread._codex
        client, dispatcher = codex.client, codex._dispatcher
        handlers: Handlers | None = self._options.get("handlers")
        thread_id = self._thread.id
        if handlers is not None:
            dispatcher.push_turn_handlers(thread_id, handlers)
        telemetry = codex._instrumentation
        try:
            # Not shielded: if this is cancelled or interrupted once the request is written,
            # the client interrupts the turn itself (see CodexClient.start_turn).
            if telemetry is None:
                result, stream = await client.start_turn(thread_id, self._params)
            else:  # the turn's span starts here, a child of the caller's current span
                trace = telemetry.start_turn(client, thread_id, self._params, self._thread.info)
                result, stream = await trace.start(client, self._params)
        except BaseException:
            if handlers is not None:
                dispatcher.pop_turn_handlers(thread_id, handlers)
            raise
        try:
            turn: m.Turn = structure_result("turn/start", result.get("turn"), m.Turn)
            return TurnHandle(
                client=client,
                dispatcher=dispatcher,
                thread_id=thread_id,
                turn=turn,
                stream=stream,
                idle_timeout=self._options.get("idle_timeout"),
                handlers=handlers,
                owner=self._thread,
                ledger=codex._usage_ledger,
                telemetry=telemetry,
                gateway=codex.gateway,
            )
        except BaseException:
            # No handle will own the turn (a response that does not fit the schema raises
            # ProtocolError): interrupt it and leave nothing installed.
            if handlers is not None:
                dispatcher.pop_turn_handlers(thread_id, handlers)
            client.reap_turn(thread_id, result["turn"]["id"], stream)
            raise

    async def __aenter__(self) -> TurnHandle:
        self._handle = await self._start()
        return self._handle

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._handle is not None
        await self._handle.aclose()


class Thread:
    """A conversation thread. Start turns on it with :meth:`turn` or :meth:`run`."""

    _goal_type: typing.ClassVar[type[Goal]] = Goal
    """What :meth:`goal` makes (a pooled thread's goal also holds a turn slot)."""

    def __init__(self, codex: CodexThreadsMixin, thread_id: str, info: m.Thread | None = None):
        self._codex = codex
        self.id = thread_id
        self.info = info
        """The ``Thread`` object from the response that gave us this thread, if any."""

    def turn(
        self,
        /,
        input: RunInput,
        *,
        handlers: Handlers | None = None,
        idle_timeout: float | None = None,
        approval_mode: ApprovalMode | None = None,
        sandbox: Sandbox | None = None,
        model: str | None = None,
        effort: str | None = None,
        cwd: str | None = None,
        output_schema: Any = None,
        personality: str | None = None,
        summary: str | None = None,
        service_tier: str | None = None,
        source: str | None = None,
        turn_service_tier: str | None = None,
        client_user_message_id: str | None = None,
        **params: Any,
    ) -> TurnStarter:
        """Start a turn: ``handle = await thread.turn(...)`` or ``async with thread.turn(...)``.

        :param input: a string, an input item, a list of them, or an ``ExternalMessage``.
        :param handlers: server-request handlers for this turn only (over the thread's).
        :param idle_timeout: interrupt the turn and raise ``TurnIdleTimeoutError`` if it
            sends no event for this many seconds.
        :param approval_mode: the official preset for ``approval_policy`` and
            ``approvals_reviewer``.
        :param sandbox: the official preset for ``sandbox_policy``.
        :param source: a label for what started the turn (``turnTrigger``); no authority.
        :param turn_service_tier: service tier of this turn only (``service_tier`` changes
            the thread's default).
        :param params: any other field of ``TurnStartParams`` by its snake_case name
            (``approval_policy``, ``sandbox_policy``, ``summary``, ``personality``, ...).
        """
        wire_input, tool_output = to_wire_turn_input(input)
        wire = _wire_params(
            m.TurnStartParams,
            {"thread_id": self.id, "input": wire_input},
            {
                "model": model,
                "effort": effort,
                "cwd": cwd,
                "output_schema": output_schema,
                "personality": personality,
                "summary": summary,
                "service_tier": service_tier,
                "turn_trigger": source,
                "service_tier_for_turn": turn_service_tier,
                "client_user_message_id": client_user_message_id,
                "tool_output": tool_output,
                "sandbox_policy": sandbox_policy(sandbox),
                **approval_mode_params(approval_mode),
                **params,
            },
        )
        return TurnStarter(self, wire, handlers=handlers, idle_timeout=idle_timeout)

    @typing.overload
    async def run(
        self,
        /,
        input: RunInput,
        *,
        goal: typing.Literal[False] = False,
        handlers: Handlers | None = None,
        idle_timeout: float | None = None,
        **params: Any,
    ) -> TurnResult: ...

    @typing.overload
    async def run(self, /, input: str, *, goal: typing.Literal[True]) -> GoalResult: ...

    async def run(
        self,
        /,
        input: RunInput,
        *,
        goal: bool = False,
        handlers: Handlers | None = None,
        idle_timeout: float | None = None,
        **params: Any,
    ) -> TurnResult | GoalResult:
        """Run one turn to completion and return its result.

        Cancelling the caller (a timeout, a cancelled task group) interrupts the turn on the
        server before the cancellation continues. ``goal=True`` (the official SDK's next API)
        runs ``input`` as a goal's objective instead: :meth:`run_goal`, its result returned.
        """
        if goal:
            if not isinstance(input, str) or handlers or idle_timeout is not None or params:
                raise TypeError("run(..., goal=True) takes the objective as a string, alone")
            return await self.run_goal(input)
        async with self.turn(input, handlers=handlers, idle_timeout=idle_timeout, **params) as h:
            return await h.run()

    def goal(self, /, objective: str, *, token_budget: int | None = None) -> Goal:
        """Set a goal and own it: ``async with thread.goal("...") as goal:``.

        The runtime runs turns for the goal by itself until it is met, its ``token_budget``
        is spent, or it is paused or cleared; ``async for event in goal`` streams all of
        them as one stream. Leaving the block before the goal is over pauses it and
        interrupts its live turn (see :class:`Goal`). The thread must be persisted (not
        ``ephemeral``) and idle; a goal it already had is replaced.

        :raises ValueError: if the client opts out of a notification a goal reads
            (``turn/started``, ``thread/goal/updated``, ``thread/goal/cleared``).
        """
        codex = self._codex
        check_goal_reads(codex._opt_outs())
        return self._goal_type(
            client=codex.client,
            dispatcher=codex._dispatcher,
            thread_id=self.id,
            objective=objective,
            token_budget=token_budget,
            owner=self,
            ledger=codex._usage_ledger,
            gateway=codex.gateway,
            telemetry=codex._instrumentation,
            info=self.info,
        )

    async def run_goal(self, /, objective: str, *, token_budget: int | None = None) -> GoalResult:
        """Run a goal until it stops (met, out of budget, usage-limited, blocked) and
        return its :class:`GoalResult`: every turn's ``TurnResult``, usage summed over them,
        the final response. Cancelling the caller pauses the goal and interrupts its turn."""
        async with self.goal(objective, token_budget=token_budget) as goal:
            return await goal.run()

    async def read(self, *, include_turns: bool = False) -> m.ThreadReadResponse:
        """Read this thread (and its turns' history with ``include_turns``)."""
        return await self._codex.client.thread_read(thread_id=self.id, include_turns=include_turns)

    async def set_name(self, name: str) -> m.ThreadSetNameResponse:
        return await self._codex.client.thread_name_set(thread_id=self.id, name=name)

    async def compact(self) -> m.ThreadCompactStartResponse:
        """Ask the runtime to compact this thread's context."""
        return await self._codex.client.thread_compact_start(thread_id=self.id)

    def notifications(self, *, include_turns: bool = False) -> NotificationStream:
        """This thread's notifications (its turns' too with ``include_turns``)."""
        return self._codex.client.subscribe_thread(self.id, include_turns=include_turns)

    def usage(self) -> TokenUsage:
        """Tokens spent by this thread's turns that this client ran or streamed, since the
        client started (whichever ``Thread`` object of the same id started them); the sum of
        their ``TurnResult.usage``, interrupted and failed turns included."""
        return self._codex._usage_ledger.thread_usage(self.id)

    def __repr__(self) -> str:
        return f"<Thread {self.id}>"


class CodexThreadsMixin:
    """The thread-level half of ``AsyncCodex``."""

    _dispatcher: Dispatcher
    _credentials: CredentialsCheck
    _usage_ledger: UsageLedger
    _instrumentation: Instrumentation | None
    gateway: ModelCallSource | None

    @property
    def client(self) -> CodexClient:  # pragma: no cover - defined by AsyncCodex
        raise NotImplementedError

    def _opt_outs(self) -> list[str]:  # pragma: no cover - defined by AsyncCodex
        raise NotImplementedError

    def _register(
        self,
        response: Any,
        handlers: Handlers | None,
        tools: list[DynamicTool],
    ) -> Thread:
        info: m.Thread = response.thread
        thread = Thread(self, info.id, info)
        token = self._dispatcher.set_thread(info.id, handlers=handlers, tools=tools)
        if token is not None:
            # The thread's handlers and tools live as long as some Thread object (or a turn
            # handle of it) does, or until the thread is archived.
            weakref.finalize(thread, self._dispatcher.forget_thread, info.id, token)
        return thread

    async def thread_start(
        self,
        /,
        *,
        model: str | None = None,
        cwd: str | None = None,
        dynamic_tools: Sequence[DynamicTool | ToolFunction] | None = None,
        handlers: Handlers | None = None,
        approval_mode: ApprovalMode | None = None,
        approval_policy: Any = None,
        sandbox: Sandbox | str | None = None,
        base_instructions: str | None = None,
        developer_instructions: str | None = None,
        ephemeral: bool | None = None,
        config: dict[str, Any] | None = None,
        **params: Any,
    ) -> Thread:
        """Start a new thread.

        :param dynamic_tools: async functions (or :class:`DynamicTool`) the model may call;
            the library registers them and answers their calls.
        :param handlers: server-request handlers for this thread (over the client's).
        :param approval_mode: the official preset for ``approval_policy`` and
            ``approvals_reviewer`` (not sent when omitted: see ``docs/migrating.md``).
        :param sandbox: a :class:`Sandbox` preset or a ``SandboxMode`` wire string.
        :param params: any other field of ``ThreadStartParams`` by its snake_case name.
        """
        tools = _tools(dynamic_tools)
        wire = _wire_params(
            m.ThreadStartParams,
            {},
            {
                "model": model,
                "cwd": cwd,
                "approval_policy": approval_policy,
                "sandbox": sandbox_mode(sandbox),
                "base_instructions": base_instructions,
                "developer_instructions": developer_instructions,
                "ephemeral": ephemeral,
                "config": config,
                **approval_mode_params(approval_mode),
                **params,
            },
        )
        if tools:
            wire["dynamicTools"] = [tool.spec() for tool in tools]
        await self._credentials.ensure(self.client)
        result = await self.client.request("thread/start", wire)
        response = structure_result("thread/start", result, m.ThreadStartResponse)
        thread = self._register(response, handlers, tools)
        self._usage_ledger.started(thread.id)  # a new thread's running total starts at zero
        return thread

    async def thread_resume(
        self,
        /,
        thread_id: str,
        *,
        dynamic_tools: Sequence[DynamicTool | ToolFunction] | None = None,
        handlers: Handlers | None = None,
        approval_mode: ApprovalMode | None = None,
        sandbox: Sandbox | str | None = None,
        include_turns: bool | None = None,
        **params: Any,
    ) -> Thread:
        """Resume a stored thread. ``dynamic_tools`` re-attaches the Python functions behind
        the tools the thread was started with."""
        wire = _wire_params(
            m.ThreadResumeParams,
            {"thread_id": thread_id},
            _thread_options(approval_mode, sandbox, include_turns, params),
        )
        await self._credentials.ensure(self.client)
        result = await self.client.request("thread/resume", wire)
        response = structure_result("thread/resume", result, m.ThreadResumeResponse)
        return self._register(response, handlers, _tools(dynamic_tools))

    async def thread_fork(
        self,
        /,
        thread_id: str,
        *,
        dynamic_tools: Sequence[DynamicTool | ToolFunction] | None = None,
        handlers: Handlers | None = None,
        approval_mode: ApprovalMode | None = None,
        sandbox: Sandbox | str | None = None,
        include_turns: bool | None = None,
        **params: Any,
    ) -> Thread:
        """Fork a thread into a new one (``last_turn_id``/``before_turn_id`` pick the point)."""
        wire = _wire_params(
            m.ThreadForkParams,
            {"thread_id": thread_id},
            _thread_options(approval_mode, sandbox, include_turns, params),
        )
        await self._credentials.ensure(self.client)
        result = await self.client.request("thread/fork", wire)
        response = structure_result("thread/fork", result, m.ThreadForkResponse)
        return self._register(response, handlers, _tools(dynamic_tools))

    def thread(self, thread_id: str) -> Thread:
        """A handle for an existing thread id, without a request (e.g. one already loaded)."""
        return Thread(self, thread_id)

    async def thread_list(self, /, **params: Any) -> m.ThreadListResponse:
        """List stored threads (``limit``, ``cursor``, ``archived``, ``search_term``, ...)."""
        wire = _wire_params(m.ThreadListParams, {}, params)
        result = await self.client.request("thread/list", wire)
        response: m.ThreadListResponse = structure_result(
            "thread/list", result, m.ThreadListResponse
        )
        return response

    async def thread_archive(self, thread_id: str) -> m.ThreadArchiveResponse:
        """Archive a thread: the runtime unloads it (~0.9 MB each), and this client forgets
        its handlers and dynamic tools."""
        response = await self.client.thread_archive(thread_id=thread_id)
        self._dispatcher.forget_thread(thread_id)
        return response

    async def thread_unarchive(self, thread_id: str) -> Thread:
        response = await self.client.thread_unarchive(thread_id=thread_id)
        return Thread(self, response.thread.id, response.thread)

    async def models(
        self, /, *, include_hidden: bool = False, **params: Any
    ) -> m.ModelListResponse:
        """The models the runtime offers."""
        wire = _wire_params(m.ModelListParams, {"include_hidden": include_hidden or None}, params)
        result = await self.client.request("model/list", wire)
        response: m.ModelListResponse = structure_result("model/list", result, m.ModelListResponse)
        return response

    async def account(self, *, refresh_token: bool = False) -> m.GetAccountResponse:
        """The signed-in account, if any."""
        wire = _wire_params(m.GetAccountParams, {"refresh_token": refresh_token or None}, {})
        result = await self.client.request("account/read", wire)
        response: m.GetAccountResponse = structure_result(
            "account/read", result, m.GetAccountResponse
        )
        return response

    def notifications(self, *, everything: bool = False) -> NotificationStream:
        """Global notifications, plus whatever no turn or thread subscriber took."""
        return self.client.subscribe(everything=everything)

    def usage(self) -> TokenUsage:
        """Tokens spent by the turns this client ran or streamed since it started: the sum
        of their ``TurnResult.usage`` (interrupted and failed turns included)."""
        return self._usage_ledger.total

    @property
    def rate_limits(self) -> m.RateLimitSnapshot | None:
        """The latest ``account/rateLimits/updated`` snapshot (a sparse update merged into
        the previous one of its limit id), or None until one arrives. The runtime sends one
        with every model response; the reader stores it whoever listens."""
        return self.client.rate_limits.latest

    def server_requests(
        self, *, answer_timeout: float = 300.0, buffer: int = 100
    ) -> ServerRequestQueue:
        """Answer server requests by hand: ``async with codex.server_requests() as q``.

        Requests no handler takes are queued here while the queue is open; one not answered
        within ``answer_timeout`` seconds, or still queued when the queue closes or the
        connection ends, is answered fail-closed (approvals declined).
        """
        return self._dispatcher.open_queue(answer_timeout=answer_timeout, buffer=buffer)
