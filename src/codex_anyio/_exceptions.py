"""Every exception the library raises, in one place.

The hierarchy mirrors the official ``openai_codex.errors`` so code written against it catches
the same names, and adds what a structured-concurrency client needs on top: the process exit
status and stderr tail on :class:`TransportClosedError`, typed turn failures, and overflow of
a bounded subscription. Each exception carries its cause as attributes, not only as text.
"""

from __future__ import annotations

import errno
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._protocol._generated.models import RateLimitSnapshot

__all__ = [
    "AuthenticationError",
    "CassetteError",
    "ClusterError",
    "CodexError",
    "CodexNotFoundError",
    "CodexRpcError",
    "CredentialsMissingError",
    "ForkedClientError",
    "InternalRpcError",
    "InvalidParamsError",
    "InvalidRequestError",
    "JsonRpcError",
    "MethodNotFoundError",
    "ParseError",
    "ProtocolError",
    "ReplayMismatchError",
    "RestartsExhaustedError",
    "ResultsFileError",
    "ResultsWriteError",
    "RetryLimitExceededError",
    "ServerBusyError",
    "ServerUnresponsiveError",
    "StartupError",
    "SubscriptionOverflowError",
    "TaskFileError",
    "TransportClosedError",
    "TurnFailedError",
    "TurnIdleTimeoutError",
    "UsageLimitError",
    "UsageLimitWaitError",
    "error_from_wire",
    "is_retryable_error",
    "map_jsonrpc_error",
]


class CodexError(Exception):
    """Base class of every error raised by codex-anyio."""


class ClusterError(CodexError):
    """A batch cannot run on the Ray cluster: Ray is not installed, no node can host a batch
    actor, or every actor is gone (its restarts used up). The underlying error, if any, is the
    ``__cause__``."""


class TaskFileError(CodexError, ValueError):
    """A batch's tasks cannot be used: the tasks file cannot be read, or one of its lines is
    not a valid task (the message names the file and line). Raised before any task runs."""


class ResultsFileError(CodexError):
    """A batch's results file cannot be used, found before anything is written to it: it
    cannot be opened (a directory, a missing folder, a read-only file system), it is not a
    regular file (``/dev/stdout``, a pipe), it holds no result row but other lines (not a
    results file: appending to it would mix the two), it is the tasks file, or another batch
    run holds its lock. ``path`` is the file; the OS error, if any, is the ``__cause__``."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)


class ResultsWriteError(CodexError):
    """A result row could not be written (the disk is full, the file system went read-only).

    The row was cut off again (nothing half-written is left in the file, where the OS let us
    truncate it; otherwise the next run cuts the torn line), so the batch can be run again
    once the cause is fixed. ``errno`` and ``strerror`` are the OS error's, also the
    ``__cause__``.
    """

    def __init__(self, path: str, cause: OSError) -> None:
        self.path = path
        self.errno = cause.errno
        self.strerror = cause.strerror or str(cause)
        super().__init__(f"could not write to the results file {path}: {self.strerror}")


class TransportClosedError(CodexError):
    """The app-server connection ended: the process exited, its stdout closed, or the
    WebSocket to a server we attached to closed (``reason`` then names the close code and
    reason; such a server has no exit status or stderr for us).

    Raised to every pending request, turn stream and subscription when that happens, so
    nothing waits forever. ``returncode`` is the exit status when the process had exited
    (``None`` if it was still running when the pipe closed); ``stderr_tail`` is the end of what
    the process wrote to stderr, which is where the runtime explains itself (a bad config, a
    panic).
    """

    def __init__(
        self,
        reason: str,
        *,
        returncode: int | None = None,
        stderr_tail: str = "",
    ) -> None:
        self.reason = reason
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        message = reason
        if returncode is not None:
            message += f" (exit status {returncode})"
        if stderr_tail.strip():
            message += "\n--- app-server stderr (tail) ---\n" + stderr_tail.rstrip()
        super().__init__(message)

    def clone(self) -> TransportClosedError:
        """A new instance with the same facts: one error is raised in many tasks, and
        re-raising a single instance would splice their tracebacks together."""
        copy = type(self)(self.reason, returncode=self.returncode, stderr_tail=self.stderr_tail)
        copy.__cause__ = self.__cause__
        return copy


class StartupError(TransportClosedError):
    """The app-server could not be started or initialized.

    A bad ``config.toml`` makes the runtime exit at once with the reason on stderr; that
    reason is in ``stderr_tail`` and in the message, not a "broken pipe".
    """


class CodexNotFoundError(StartupError, FileNotFoundError):
    """The ``codex`` executable does not exist where the config says it is.

    Also a :class:`FileNotFoundError` (errno ``ENOENT``, ``filename`` set), which is what the
    official SDK raises here, so code written for it keeps catching it.
    """

    def __init__(
        self, reason: str, *, returncode: int | None = None, stderr_tail: str = ""
    ) -> None:
        super().__init__(reason, returncode=returncode, stderr_tail=stderr_tail)
        self.errno = errno.ENOENT
        self.strerror = reason

    def __str__(self) -> str:
        # OSError formats itself as "[Errno 2] ..." once errno is set; keep our message.
        return str(self.args[0]) if self.args else self.reason


class ServerUnresponsiveError(TransportClosedError):
    """The app-server stopped answering while its connection stayed open (a stopped or
    wedged process): nothing came from it for ``silent_for`` seconds, a liveness probe's wait
    included. :class:`CodexPool`'s watchdog (``probe_interval``, ``probe_timeout``) then kills
    the member and fails its in-flight work with this error; work whose turn had not started
    is retried on another member instead."""

    def __init__(
        self,
        reason: str,
        *,
        returncode: int | None = None,
        stderr_tail: str = "",
        silent_for: float = 0.0,
    ) -> None:
        super().__init__(reason, returncode=returncode, stderr_tail=stderr_tail)
        self.silent_for = silent_for

    def clone(self) -> ServerUnresponsiveError:
        copy = type(self)(
            self.reason,
            returncode=self.returncode,
            stderr_tail=self.stderr_tail,
            silent_for=self.silent_for,
        )
        copy.__cause__ = self.__cause__
        return copy


class RestartsExhaustedError(TransportClosedError):
    """A :class:`CodexPool` member exited more than ``max_restarts`` times within
    ``restart_window`` seconds and is not restarted again. Raised to every call waiting for a
    member, and to every new one, once no member is left; ``returncode`` and ``stderr_tail``
    are those of the last exit."""

    def __init__(
        self,
        reason: str,
        *,
        returncode: int | None = None,
        stderr_tail: str = "",
        member: int = 0,
        max_restarts: int = 0,
        restart_window: float = 0.0,
    ) -> None:
        super().__init__(reason, returncode=returncode, stderr_tail=stderr_tail)
        self.member = member
        self.max_restarts = max_restarts
        self.restart_window = restart_window

    def clone(self) -> RestartsExhaustedError:
        copy = type(self)(
            self.reason,
            returncode=self.returncode,
            stderr_tail=self.stderr_tail,
            member=self.member,
            max_restarts=self.max_restarts,
            restart_window=self.restart_window,
        )
        copy.__cause__ = self.__cause__
        return copy


class ForkedClientError(CodexError, RuntimeError):
    """A sync :class:`Codex` was used in a process forked from the one that started it.

    Its event loop thread does not exist in the child (``fork`` copies only the calling
    thread) and its app-server belongs to the parent, so a call would wait forever. Start a
    new client in the child. ``owner_pid`` is the process that started the client, ``pid``
    the one that tried to use it.
    """

    def __init__(self, owner_pid: int, pid: int) -> None:
        self.owner_pid = owner_pid
        self.pid = pid
        super().__init__(
            f"this Codex client belongs to process {owner_pid}, which started it; process "
            f"{pid} is a fork of it and cannot use it (the client's event loop thread and "
            "app-server are the parent's): create a new Codex in the child"
        )


class CredentialsMissingError(CodexError):
    """The runtime's model provider needs an OpenAI login and the runtime has none.

    Raised by ``thread_start``/``thread_resume``/``thread_fork`` before any turn is sent,
    because the runtime itself would accept the turn and retry the unauthenticated model
    request for minutes before failing it.
    """

    def __init__(self) -> None:
        super().__init__(
            "the Codex runtime has no credentials and its model provider needs them: run "
            "`codex-anyio login` once on this machine (or `codex login`, where the Codex CLI "
            "is installed), or call codex.login_api_key(...) / codex.login_chatgpt() first; "
            "codex.account() or `codex-anyio login status` shows the current state "
            "(pass require_credentials=False to skip this check)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt without arguments (the default passes the message, which __init__ does not
        # take): a batch on Ray gets it back from an actor's process.
        return (type(self), (), self.__dict__)


class AuthenticationError(CodexError):
    """A running app-server refused our credentials (HTTP 401/403 on the WebSocket upgrade).

    Not a :class:`ProtocolError`: nothing was malformed; the token is wrong, missing or
    expired. The message names the address, never the token.
    """


class ProtocolError(CodexError):
    """The peer sent something this client cannot use: a line that is not JSON (fatal in
    strict mode), an undecodable response (that request fails), a response that does not match
    the pinned schema (schema drift), or an over-long line."""


class SubscriptionOverflowError(CodexError):
    """A bounded notification stream was full when the reader had to deliver to it.

    The reader never blocks on a consumer (that could deadlock responses for everyone), so a
    consumer that falls ``limit`` events behind loses its subscription instead: it first
    receives every event that was buffered, then this error. Raise the limit, or consume
    faster.
    """

    def __init__(self, what: str, limit: int) -> None:
        self.what = what
        self.limit = limit
        super().__init__(
            f"{what} fell {limit} events behind and was closed; "
            "raise its buffer limit or consume it faster"
        )

    def clone(self) -> SubscriptionOverflowError:
        return type(self)(self.what, self.limit)


class JsonRpcError(CodexError):
    """A JSON-RPC error response from the server, with its ``code``, ``message`` and ``data``;
    ``raw`` is the error object as received (None when the error was made here)."""

    def __init__(self, code: int, message: str, data: Any = None, *, raw: Any = None) -> None:
        super().__init__(f"JSON-RPC error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data
        self.raw = raw


class CodexRpcError(JsonRpcError):
    """Base of the typed JSON-RPC errors."""


class ParseError(CodexRpcError):
    """-32700: the server could not parse what we sent."""


class InvalidRequestError(CodexRpcError):
    """-32600: the runtime rejected the request's shape or its state (e.g. no active turn)."""


class MethodNotFoundError(CodexRpcError):
    """-32601: the runtime does not offer this method (older runtime, or not experimental)."""


class InvalidParamsError(CodexRpcError):
    """-32602: the runtime rejected the parameters."""


class InternalRpcError(CodexRpcError):
    """-32603: the runtime failed internally."""


class ServerBusyError(CodexRpcError):
    """The runtime is overloaded; the call may succeed if retried (see ``retry_on_overload``).

    The runtime answers ``-32001 "Server overloaded; retry later."`` once about 128-170
    requests are queued in one process (measured on 0.163.0); other codes carry a
    ``server_overloaded`` marker in their data.
    """


class RetryLimitExceededError(ServerBusyError):
    """The runtime gave up after exhausting its own retry budget."""


class TurnFailedError(CodexError, RuntimeError):
    """A turn ended with status ``failed``.

    Also a :class:`RuntimeError`, which is what the official SDK raises for a failed turn.

    ``turn`` is the typed final turn and ``error`` its ``TurnError`` (message, codex error
    info, additional details), so a caller can tell a model error from a usage limit.
    ``detail`` is what the client knows beyond the runtime's message (a model gateway's
    account of the call that failed: the runtime shows any 500 as "high demand").
    """

    def __init__(self, turn: Any, error: Any, *, detail: str | None = None) -> None:
        self.turn = turn
        self.error = error
        self.detail = detail
        message = getattr(error, "message", None) or "turn failed"
        if detail:
            message += f" ({detail})"
        super().__init__(f"turn {getattr(turn, 'id', '?')} failed: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the facts, not from the message (the default): a batch on Ray gets a
        # task's UsageLimitError back from the actor's process, reset time and all.
        return (type(self), (self.turn, self.error), self.__dict__)


USAGE_LIMIT_EXCEEDED = "usageLimitExceeded"
"""The ``codexErrorInfo`` of a turn error when the account's usage limit is reached."""


def is_usage_limit(error: Any) -> bool:
    """Whether a ``TurnError`` (typed or raw) says the account's usage limit is reached."""
    info = error.get("codexErrorInfo") if isinstance(error, dict) else None
    if info is None:
        info = getattr(error, "codex_error_info", None)
    return info == USAGE_LIMIT_EXCEEDED


class UsageLimitError(TurnFailedError):
    """A turn failed because the account has reached its usage limit.

    The model service answered HTTP 429 ``usage_limit_reached``; the runtime does not retry
    it and fails the turn with ``codexErrorInfo == "usageLimitExceeded"``. Retrying before
    ``resets_at`` is pointless, so ``retry_on_overload`` never retries this error.

    Also a :class:`TurnFailedError` (and a ``RuntimeError``), so existing ``except`` clauses
    still catch it. ``error`` is the runtime's ``TurnError`` (its message names the reset time
    in the runtime's local time, as text); ``resets_at`` is that moment as an aware UTC
    datetime, taken from the rate-limit windows the service reported as exhausted with the
    429 (None if it reported none); ``rate_limits`` is the client's latest
    ``RateLimitSnapshot`` at the time (None if none arrived).
    """

    def __init__(
        self,
        turn: Any,
        error: Any,
        *,
        resets_at: datetime | None = None,
        rate_limits: RateLimitSnapshot | None = None,
    ) -> None:
        super().__init__(turn, error)
        self.resets_at = resets_at
        self.rate_limits = rate_limits


class UsageLimitWaitError(UsageLimitError):
    """Every account of a :class:`~codex_anyio.CodexPool` stayed paused by its usage limit
    for longer than the pool's ``max_wait``.

    A pool pauses an account whose usage limit is reached (or whose rate-limit window is
    used above the pool's threshold) until the window resets, and work waits for an account
    with headroom; this ends such a wait. Not a turn's failure (``turn`` and ``error`` are
    None), but a :class:`UsageLimitError`, so code that handles the one handles the other
    (``codex-anyio batch`` writes a ``usage_limit`` row). ``resets_at`` is when the first
    account resumes (an aware UTC datetime, None if unknown), ``waited`` the seconds waited,
    ``reasons`` why each paused account is paused.
    """

    def __init__(
        self,
        message: str,
        *,
        resets_at: datetime | None = None,
        waited: float = 0.0,
        reasons: tuple[str, ...] = (),
    ) -> None:
        CodexError.__init__(self, message)
        self.turn = None
        self.error = None
        self.detail = None
        self.resets_at = resets_at
        self.rate_limits = None
        self.waited = waited
        self.reasons = reasons

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self),), self.__dict__)


class ReplayMismatchError(TurnFailedError):
    """A replayed turn asked the model for something its cassette does not hold.

    A :class:`~codex_anyio.gateway.ModelGateway` replaying a cassette answers each model call
    with the recorded answer to the same request; when the runtime's request differs from the
    recorded one (a changed prompt, a different tool result), or the turn makes more calls than
    were recorded, the gateway fails the call and the turn raises this. ``thread_id``,
    ``turn_id`` and ``index`` (the call's index within its turn, from 0) name the call in this
    run; ``recorded_thread_id`` and ``recorded_turn_id`` the recorded call it was compared
    with (None if there was none); ``differences`` lists ``(field, recorded, sent)`` for each
    differing request field (a JSON path such as ``input[3].content[0].text``), after the
    volatile fields were normalised (see the gateway's documentation). Also a
    :class:`TurnFailedError`.
    """

    def __init__(
        self,
        turn: Any = None,
        error: Any = None,
        *,
        thread_id: str | None = None,
        turn_id: str | None = None,
        index: int = 0,
        differences: tuple[tuple[str, str, str], ...] = (),
        recorded_thread_id: str | None = None,
        recorded_turn_id: str | None = None,
        reason: str = "",
    ) -> None:
        self.turn = turn
        self.error = error
        self.thread_id = thread_id
        self.turn_id = turn_id
        self.index = index
        self.differences = differences
        self.recorded_thread_id = recorded_thread_id
        self.recorded_turn_id = recorded_turn_id
        self.reason = reason
        where = f"thread {thread_id}, turn {turn_id}, model call {index}"
        if recorded_turn_id is not None:
            where += f" (recorded as thread {recorded_thread_id}, turn {recorded_turn_id})"
        details = reason or "; ".join(
            f"{field}: recorded {recorded}, sent {sent}" for field, recorded, sent in differences
        )
        RuntimeError.__init__(self, f"replay mismatch in {where}: {details}")

    @property
    def fields(self) -> tuple[str, ...]:
        """The differing request fields (JSON paths), in document order."""
        return tuple(field for field, _, _ in self.differences)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_replay_mismatch, (self.__dict__,))


def _rebuild_replay_mismatch(state: dict[str, Any]) -> ReplayMismatchError:
    keys = ("thread_id", "turn_id", "index", "differences", "recorded_thread_id")
    facts = {key: state[key] for key in (*keys, "recorded_turn_id", "reason")}
    return ReplayMismatchError(state["turn"], state["error"], **facts)


class CassetteError(CodexError, ValueError):
    """A cassette (a model gateway's JSONL recording) cannot be used: it cannot be read, its
    header is not a cassette's or has an unknown version, or one of its lines is not valid
    JSON or not a valid exchange (a truncated last line, say). ``path`` is the file and
    ``line`` the 1-based line number (None when the file as a whole is at fault)."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        where = path if line is None else f"{path}, line {line}"
        super().__init__(f"cassette {where}: {message}")


class TurnIdleTimeoutError(CodexError):
    """A turn sent no event for ``idle_timeout`` seconds and was interrupted."""

    def __init__(self, turn_id: str, idle_timeout: float) -> None:
        self.turn_id = turn_id
        self.idle_timeout = idle_timeout
        super().__init__(f"turn {turn_id} sent no event for {idle_timeout:g} s and was interrupted")


def fresh(error: BaseException) -> BaseException:
    """A new instance of a stored error, to raise it again in another task.

    One connection failure reaches many waiters; raising the same instance in each would
    splice their tracebacks together. Errors that know how to copy themselves (``clone``) do.
    """
    clone = getattr(error, "clone", None)
    return clone() if clone is not None else error


SERVER_OVERLOADED = -32001
"""The runtime's JSON-RPC code for "Server overloaded; retry later." (0.163.0)."""


def _mentions_retry_limit(message: str) -> bool:
    lowered = message.lower()
    return "retry limit" in lowered or "too many failed attempts" in lowered


def _is_server_overloaded(data: Any) -> bool:
    """Find the runtime's ``server_overloaded`` marker wherever the error data nests it."""
    if isinstance(data, str):
        return data.lower() == "server_overloaded"
    if isinstance(data, dict):
        return any(_is_server_overloaded(value) for value in data.values())
    if isinstance(data, list):
        return any(_is_server_overloaded(value) for value in data)
    return False


def error_from_wire(error: Any) -> JsonRpcError:
    """The exception for an ``error`` member as received, however malformed.

    A well-formed error maps by its code (:func:`map_jsonrpc_error`); one whose ``code`` is
    not an integer (or that is not an object at all) is a :class:`JsonRpcError` with code
    -32603, never a bare ``TypeError``. ``raw`` always holds what was received.
    """
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message", "")
        if type(code) is int:
            return map_jsonrpc_error(
                code,
                message if isinstance(message, str) else repr(message),
                error.get("data"),
                raw=error,
            )
    return JsonRpcError(
        -32603, f"malformed error response from the app-server: {error!r}", raw=error
    )


def map_jsonrpc_error(
    code: int, message: str, data: Any = None, *, raw: Any = None
) -> JsonRpcError:
    """Turn a wire error into the most specific exception class for it."""
    by_code: dict[int, type[CodexRpcError]] = {
        -32700: ParseError,
        -32600: InvalidRequestError,
        -32601: MethodNotFoundError,
        -32602: InvalidParamsError,
        -32603: InternalRpcError,
    }
    if code in by_code:
        return by_code[code](code, message, data, raw=raw)
    if code == SERVER_OVERLOADED:
        return ServerBusyError(code, message, data, raw=raw)
    if -32099 <= code <= -32000:
        if _mentions_retry_limit(message):
            return RetryLimitExceededError(code, message, data, raw=raw)
        if _is_server_overloaded(data):
            return ServerBusyError(code, message, data, raw=raw)
        return CodexRpcError(code, message, data, raw=raw)
    return JsonRpcError(code, message, data, raw=raw)


def is_retryable_error(exc: BaseException) -> bool:
    """True for transient overload errors, which a retry with backoff may get past.

    Never for :class:`UsageLimitError`: the limit lasts until its reset time, hours away.
    """
    if isinstance(exc, UsageLimitError):
        return False
    if isinstance(exc, ServerBusyError):
        return True
    return isinstance(exc, JsonRpcError) and _is_server_overloaded(exc.data)
