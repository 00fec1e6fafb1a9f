"""``codex-anyio batch``: the command-line face of :mod:`codex_anyio.batch`.

What lives here and nowhere else: the arguments, where the runtimes come from, the signal
policy and the exit statuses (the progress display and the summary are ``_batch_report``'s).
Ctrl-C (SIGINT), SIGTERM or SIGHUP cancels the batch: every running turn is interrupted on
the server (shielded, bounded), the results written so far are already on disk (one whole row
each), and the command exits with 130 (143 for SIGTERM, 129 for SIGHUP). Running the same
command again skips every id already in the results file, but for those whose latest row has
a status in ``--retry`` (``--retry-failed``: all but ``completed``): they run again, and
their new row is appended (the last row of an id is the one that counts).

Every way it can end is one line on stderr and one of the statuses in :data:`EXIT_STATUSES`
(also in ``--help`` and the README): a bad argument or file is refused before anything runs
(2), a usage limit stops the batch with the reset time (3), any other stop or a task that did
not complete is 1.

Where the runtimes come from: started here (the default; ``--config`` overrides), a server
to attach to (``--connect URL`` with ``--token-file``/``--token-env``, as
``CodexConfig(connect=...)``), or, with ``--scripted``, runtimes started here against the
echoing model of ``serve --scripted`` (offline, no credentials: a harness can be tried end to
end first). With ``--gateway URL`` every runtime's model calls go through one model gateway
on this machine forwarding to ``URL``; through it (or ``--scripted``'s), ``--record`` and
``--trajectories`` keep one cassette and one ATIF trajectory per task (``batch._records``).

A sandbox per task: ``--sandbox TEMPLATE`` starts each task's runtime with a command of its
own (``{id}``, ``{cwd}``, ``{runtime}``, ``{codex_home}`` filled in per argument after it is split,
so an id cannot add arguments), ``--container IMAGE`` in a new docker/podman container
removed afterwards; a task line's ``sandbox`` or ``container`` names its own (see
:mod:`codex_anyio.batch`'s ``_sandbox``). A deadline interrupts the turn, then ends the
sandbox; a stop signal ends every sandbox.

Beyond one machine, with the same files, progress and signals: ``--ray [ADDRESS]`` runs the
pools on Ray actors (:func:`~codex_anyio.batch.run_batch_on_ray`; Ray is imported only then),
and ``--shard i/N`` runs this machine's slice of the tasks file, for job arrays that start N
copies of the command (no engine at all).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Final, NoReturn

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream

from .._exceptions import (
    CodexError,
    CredentialsMissingError,
)
from .._wire._address import Address, resolve_token
from .._wire._config import CodexConfig
from ..batch import (
    NOT_COMPLETED,
    STATUSES,
    BatchResult,
    BatchRun,
    BatchTask,
    ResultsFileError,
    ResultWriter,
    TaskFileError,
    parse_shard,
    pending_tasks,
    read_tasks,
    run_batch,
    run_batch_on_ray,
)
from ..batch._files import positive_seconds
from ..batch._sandbox import ENGINES, check_template
from ..gateway._gateway import ModelGateway
from ._batch_report import RichProgress, Tally, open_progress, print_summary
from ._errors import add_verbose, one_line
from ._signals import Stop, run_until_stopped

if TYPE_CHECKING:
    from ..batch._ray._driver import RayBatchRun

__all__ = ["EXIT_STATUSES", "OneLineErrors", "add_batch_parser", "batch_command"]

EXIT_COMPLETED: Final = 0
EXIT_NOT_COMPLETED: Final = 1
EXIT_USAGE: Final = 2
EXIT_USAGE_LIMIT: Final = 3

EXIT_STATUSES: Final = """\
exit status:
  0    every task of the tasks file (of the shard) has a completed row
  1    not all did: some rows say failed, timeout, error or interrupted (a re-run skips
       them; with --retry-failed it runs them again), or the batch stopped on an error
       every task left would hit (no credentials, the app-server would not start, the
       results file could not be written, the Ray cluster is gone): fix it and run the
       same command again to continue
  2    usage error, nothing was run: a bad argument, a tasks file that cannot be read or
       has an invalid line, a results file that cannot be used (not a results file, the
       tasks file, not a regular file, a missing folder, in use by another run)
  3    some tasks ended at the usage limit: every account stayed paused by its usage
       limit longer than --max-wait (the message names the first reset time); their rows
       say usage_limit, and the same command runs them again after that
  130  interrupted by Ctrl-C (143: SIGTERM, 129: SIGHUP); run the same command again to continue
"""
"""What each exit status of ``codex-anyio batch`` means (its ``--help`` epilog)."""


class OneLineErrors(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``prog: error: ...``) and status 2,
    instead of the usage block and then the error: the house rule for every CLI error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        return positive_seconds(float(text), "it")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of seconds, not {text!r}"
        ) from None


def _wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text!r}")
    return value


def _homes(text: str) -> list[str]:
    homes = [part for part in text.split(os.pathsep) if part]
    if not homes:
        raise argparse.ArgumentTypeError(f"a CODEX_HOME folder, not {text!r}")
    return homes


def add_batch_parser(commands: Any) -> None:
    batch = commands.add_parser(
        "batch",
        help="run a JSONL file of tasks through a pool of app-servers, resumably",
        description=(
            "Run one turn per task line (id, prompt, optional cwd, model, output_schema, "
            "config, approval, timeout, sandbox, container; goal: the prompt as a goal's "
            "objective, run to its end) and append one result line per "
            "task to the output. "
            "Re-running the same command skips ids already in the output, unless their "
            "latest row has a status given to --retry (--retry-failed: every status but "
            "completed)."
        ),
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_verbose(batch, default=argparse.SUPPRESS)
    batch.add_argument("tasks", help="tasks file (JSON lines)")
    batch.add_argument(
        "-o",
        "--output",
        required=True,
        help="results file (JSON lines, appended; locked while the batch runs)",
    )
    batch.add_argument(
        "--servers", type=_count, default=None, help="app-server processes (per actor with --ray)"
    )
    batch.add_argument(
        "--concurrency",
        type=_count,
        default=None,
        help="tasks in flight at once (per actor with --ray)",
    )
    batch.add_argument("--timeout", type=_seconds, default=None, help="seconds per task (> 0)")
    batch.add_argument("--attempts", type=_count, default=1, help="tries per failed task")
    batch.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the tasks whose latest row did not complete (failed, timeout, "
        "error, interrupted); the new row is appended and counts from then on",
    )
    batch.add_argument(
        "--retry",
        type=_statuses,
        default=frozenset(),
        metavar="STATUS,...",
        help="run again the tasks whose latest row has one of these statuses "
        f"({', '.join(STATUSES)})",
    )
    batch.add_argument(
        "--accounts",
        type=_homes,
        action="append",
        default=[],
        metavar="CODEX_HOME",
        help="a CODEX_HOME with its own login; repeat it (or join folders with "
        f"'{os.pathsep}') for several accounts: the servers are spread over them, and an "
        "account whose usage limit is reached is paused until it resets while the others "
        "take its work (per actor with --ray: the folders must exist on every node)",
    )
    batch.add_argument(
        "--max-wait",
        type=_wait_seconds,
        default=None,
        metavar="SECONDS",
        help="while every account is paused by its usage limit, wait at most this long for "
        "the first reset, then end the tasks left with usage_limit rows (default: wait for "
        "the reset; 0: stop waiting at once)",
    )
    batch.add_argument("--model", default=None, help="model for tasks that name none")
    batch.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="runtime config override for every server (TOML value), repeatable",
    )
    batch.add_argument(
        "--progress",
        choices=("auto", "rich", "plain", "none"),
        default="auto",
        help="progress display (auto: rich on a terminal if installed, else plain lines)",
    )
    batch.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    where = batch.add_mutually_exclusive_group()
    where.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help=(
            "run on a Ray cluster: one actor (one pool) per node; ADDRESS as for ray.init "
            "('auto', 'ray://HOST:10001', 'local'; default: Ray's own choice). "
            "Needs codex-anyio[ray]"
        ),
    )
    where.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="i/N",
        help="run only shard i (0-based) of N, split by a stable hash of the id "
        "(SLURM arrays, Kubernetes indexed jobs)",
    )
    batch.add_argument(
        "--actors", type=_count, default=None, help="with --ray: this many actors, not one per node"
    )
    runtime = batch.add_mutually_exclusive_group()
    runtime.add_argument(
        "--scripted",
        action="store_true",
        help="offline: answer every task from a built-in echoing model on loopback (as serve "
        "--scripted), to try a harness end to end before any credentials exist",
    )
    runtime.add_argument(
        "--connect",
        default=None,
        metavar="URL",
        help="attach to a running server (ws://HOST:PORT, wss://..., unix:///path) instead of "
        "starting runtimes; --servers is then the number of connections (default 1)",
    )
    runtime.add_argument(
        "--gateway",
        default=None,
        metavar="URL",
        help="send every runtime's model calls through one model gateway on loopback that "
        "forwards them to this Responses endpoint (http://127.0.0.1:8000/v1 for a local vLLM "
        "or SGLang, https://... for a service), each call joined to its task; needed by "
        "--record and --trajectories (or --scripted)",
    )
    batch.add_argument(
        "--gateway-key-env",
        default=None,
        metavar="VAR",
        help="with --gateway: the runtimes send 'Authorization: Bearer $VAR' (an environment "
        "variable of theirs), which the gateway passes on to the upstream",
    )
    batch.add_argument(
        "--record",
        default=None,
        metavar="DIR",
        help="write one cassette per task, DIR/<id>.jsonl: the model calls of its last "
        "attempt, replayable offline with ModelGateway(cassette=...) (with --gateway or "
        "--scripted; an id that is not a plain file name is percent-encoded)",
    )
    batch.add_argument(
        "--trajectories",
        default=None,
        metavar="DIR",
        help="write one ATIF trajectory per task, DIR/<id>.trajectory.json (the format "
        "Harbor reads; with --gateway or --scripted)",
    )
    sandbox = batch.add_mutually_exclusive_group()
    sandbox.add_argument(
        "--sandbox",
        type=_template,
        default=None,
        metavar="TEMPLATE",
        help="start each task's runtime with this command, e.g. 'bwrap --ro-bind / / --dev "
        "/dev --proc /proc --bind {cwd} {cwd} --bind {codex_home} {codex_home} --unshare-pid "
        "-- {runtime} app-server'; split like a shell line, then {id}, {cwd}, {runtime} (the "
        "bundled codex) and {codex_home} are filled in per argument",
    )
    sandbox.add_argument(
        "--container",
        default=None,
        metavar="IMAGE",
        help="run each task's runtime in a new container of IMAGE (the bundled codex mounted "
        "in it), removed when the task ends",
    )
    batch.add_argument(
        "--container-engine",
        choices=ENGINES,
        default="docker",
        help="with --container: the engine (default docker)",
    )
    batch.add_argument(
        "--container-option",
        action="append",
        default=[],
        metavar="ARG",
        help="with --container: one more argument for the engine's run, repeatable "
        "(--container-option=--network=host for a model on this machine's loopback)",
    )
    token = batch.add_mutually_exclusive_group()
    token.add_argument(
        "--token-file", default=None, metavar="FILE", help="with --connect: the bearer token file"
    )
    token.add_argument(
        "--token-env",
        default=None,
        metavar="VAR",
        help="with --connect: the environment variable holding the bearer token",
    )


def _template(text: str) -> str:
    try:
        check_template(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _statuses(text: str) -> frozenset[str]:
    statuses = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(statuses - set(STATUSES))
    if unknown or not statuses:
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of statuses ({', '.join(STATUSES)}), not {text!r}"
        )
    return statuses


def _shard(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _refuse_the_tasks_file(tasks: str, output: str) -> None:
    try:
        same = os.path.samefile(tasks, output)
    except OSError:  # the output does not exist yet (or cannot be looked at: opening says)
        return
    if same:
        raise ResultsFileError(output, f"the results file {output} is the tasks file")


def _refusal(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of arguments (argparse checks each alone), or None."""
    if args.actors is not None and args.ray is None:
        return "--actors needs --ray"
    if args.scripted and args.ray is not None:
        return "--scripted runs its model on this machine's loopback: not with --ray"
    refusal = _gateway_refusal(args)
    if refusal is not None:
        return refusal
    sandboxed = args.sandbox is not None or args.container is not None
    if sandboxed and args.ray is not None:
        return "--sandbox and --container start sandboxes on this machine: not with --ray"
    if sandboxed and args.connect is not None:
        return "--sandbox and --container start each task's runtime: not with --connect"
    if args.container_option and args.container is None:
        return "--container-option goes with --container"
    if (args.token_file or args.token_env) and args.connect is None:
        return "--token-file and --token-env go with --connect"
    if args.accounts and (args.connect is not None or args.scripted or sandboxed):
        return (
            "--accounts gives the runtimes this command starts on this machine their "
            "CODEX_HOME: not with --connect, --scripted, --sandbox or --container"
        )
    if args.connect is None:
        return None
    if args.config:
        return "--config configures runtimes this command starts; with --connect, the server's own"
    try:
        Address.parse(args.connect)
        resolve_token(None, args.token_file, args.token_env)
    except ValueError as exc:
        return f"--connect: {exc}"
    return None


def _gateway_refusal(args: argparse.Namespace) -> str | None:
    """What is wrong with the gateway arguments (``--gateway``, ``--record``, ...), or None."""
    records = [
        name
        for name, value in (("--record", args.record), ("--trajectories", args.trajectories))
        if value is not None
    ]
    if args.gateway_key_env is not None and args.gateway is None:
        return "--gateway-key-env goes with --gateway"
    if args.ray is not None and (args.gateway is not None or records):
        return (
            "--gateway, --record and --trajectories run a gateway on this machine: not with --ray"
        )
    if records and args.gateway is None and not args.scripted:
        return (
            f"{' and '.join(records)} write the model calls a gateway sees: add --gateway URL "
            "(or --scripted)"
        )
    if args.gateway is not None:
        try:
            _forwarding_gateway(args)  # checks the URL (and starts nothing)
        except ValueError as exc:
            return f"--gateway: {exc}"
    return None


def _forwarding_gateway(args: argparse.Namespace) -> ModelGateway:
    return ModelGateway(upstream=args.gateway, env_key=args.gateway_key_env)


@attrs.frozen
class _Runtime:
    config: CodexConfig | None
    gateway: ModelGateway | None = None


@asynccontextmanager
async def _runtime(args: argparse.Namespace) -> AsyncIterator[_Runtime]:
    """How the batch's pool reaches its runtimes: spawned (``--config``), attached
    (``--connect``), or spawned against the echoing model while the batch runs
    (``--scripted``); and the gateway their model calls go through (``--gateway``, or the
    echoing model's own when the calls are recorded)."""
    if args.connect is not None:
        yield _Runtime(
            CodexConfig(connect=args.connect, token_file=args.token_file, token_env=args.token_env)
        )
        return
    base = CodexConfig(config_overrides=tuple(args.config))
    if not args.scripted:
        gateway = None
        if args.gateway is not None:
            gateway = _forwarding_gateway(args)
        yield _Runtime(base if args.config else None, gateway)
        return
    from ..testing._echo import echo_runtime  # the offline set-up of `serve --scripted`

    async with echo_runtime(base) as echo:
        recorded = args.record is not None or args.trajectories is not None
        yield _Runtime(echo.config, echo.gateway if recorded else None)


def _make_run(
    args: argparse.Namespace, pending: list[BatchTask], runtime: _Runtime
) -> BatchRun | RayBatchRun:
    config = runtime.config
    # One server to attach to: one connection (per actor) unless asked; more add no runtime.
    servers = 1 if args.servers is None and args.connect is not None else args.servers
    pool_options: dict[str, Any] = {}
    if args.accounts:
        pool_options["accounts"] = [home for homes in args.accounts for home in homes]
    if args.max_wait is not None:
        pool_options["max_wait"] = args.max_wait
    if args.ray is not None:
        return run_batch_on_ray(
            pending,
            address=args.ray or None,
            actors=args.actors,
            slots=args.concurrency,
            servers=servers,
            timeout=args.timeout,
            attempts=args.attempts,
            model=args.model,
            codex_config=config,
            pool_options=pool_options,
        )
    return run_batch(
        pending,
        servers=servers,
        concurrency=args.concurrency,
        timeout=args.timeout,
        attempts=args.attempts,
        model=args.model,
        codex_config=config,
        gateway=runtime.gateway,
        record=args.record,
        trajectories=args.trajectories,
        pool_options=pool_options,
        sandbox=args.sandbox,
        container=args.container,
        container_engine=args.container_engine,
        container_options=args.container_option,
    )


CREDENTIALS_MISSING: Final = (
    "the Codex runtime has no credentials and its model provider needs them (every task "
    "would fail the same way): run `codex-anyio login` once on this machine, or try the batch "
    "offline first with --scripted"
)
"""The stop line's reason for :class:`CredentialsMissingError` (whose own message speaks to
a Python caller)."""


SANDBOX_CREDENTIALS_MISSING: Final = (
    "the Codex runtime in the sandbox has no credentials and its model provider needs them "
    "(every task would fail the same way): give the sandbox's runtime a login, a CODEX_HOME "
    "mounted in it or OPENAI_API_KEY passed to it (--container-option=-e "
    "--container-option=OPENAI_API_KEY), or try the batch offline first with --scripted"
)
"""The same for a batch whose runtimes run in sandboxes, where a login on this machine is not
theirs."""


def _stop_reason(exc: CodexError, *, sandboxed: bool = False) -> str:
    """Why the batch stopped, in one line (it is about every task left, not one)."""
    if isinstance(exc, CredentialsMissingError):
        return SANDBOX_CREDENTIALS_MISSING if sandboxed else CREDENTIALS_MISSING
    return one_line(exc)


async def _run(args: argparse.Namespace, stop: Stop) -> int:
    tasks = read_tasks(args.tasks, shard=args.shard)
    _refuse_the_tasks_file(args.tasks, args.output)
    # The lock is taken before the rows are read: a second run on this file is refused here,
    # not after it has decided to run the same ids.
    with ResultWriter(args.output) as writer:
        async with _runtime(args) as runtime:
            return await _run_pending(args, tasks, writer, runtime, stop)


async def _run_pending(
    args: argparse.Namespace,
    tasks: list[BatchTask],
    writer: ResultWriter,
    runtime: _Runtime,
    stop: Stop,
) -> int:
    statuses = {task_id: row.status for task_id, row in writer.results.items()}
    retry = args.retry | (NOT_COMPLETED if args.retry_failed else frozenset())
    pending = pending_tasks(tasks, writer.results, retry=retry)
    run = _make_run(args, pending, runtime)
    again = sum(task.id in writer.results for task in pending)
    tally = Tally(total=len(tasks), skipped=len(tasks) - len(pending), again=again)
    stream = sys.stderr
    progress = open_progress(args.progress, tally, run, stream)
    stopped: CodexError | None = None
    limited: list[BatchResult] = []

    async def record(results: MemoryObjectReceiveStream[BatchResult]) -> None:
        async for result in results:
            writer.write(result)
            statuses[result.id] = result.status
            if result.status == "usage_limit":
                limited.append(result)
            first = tally.add(result)
            progress.update(result)
            if first is not None:
                progress.note(
                    f"batch: first {first.describe()} (task {first.task_id}; "
                    f"more like it are counted in the summary)"
                )

    with progress:
        # A stop signal cancels the run (its turns interrupted, the rows so far kept), then
        # the summary below is still printed.
        with stop.here():
            try:
                if pending:
                    async with run as results:
                        tally.pool_ready()
                        await _with_pause_notes(run, progress, partial(record, results))
            except CodexError as exc:  # the batch stopped: a write, start-up, no login
                stopped = exc
    print_summary(tally, isinstance(progress, RichProgress), sys.stdout)
    missing = sum(statuses.get(task.id) != "completed" for task in tasks)
    sandboxed = args.sandbox is not None or args.container is not None
    return _ending(
        tally, stop.signum, stopped, missing, args.output, sandboxed=sandboxed, limited=limited
    )


async def _with_pause_notes(
    run: BatchRun | RayBatchRun, progress: Any, consume: Callable[[], Awaitable[None]]
) -> None:
    """Run ``consume`` while the pauses are noted beside it; its error comes out as itself,
    not in an exception group."""
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(_note_pauses, run, progress)
        try:
            await consume()
        except Exception as exc:
            failure = exc
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _note_pauses(run: BatchRun | RayBatchRun, progress: Any) -> None:
    """Say on the progress display when accounts are paused by their usage limit, and when
    no account is paused any more (nothing finishes meanwhile, so nothing else would)."""
    pauses = getattr(run, "pauses", None)
    if pauses is None:
        return
    async with aclosing(pauses()) as changes:
        async for text in changes:
            progress.note(f"batch: {text}" if text else "batch: no account is paused any more")


def _ending(
    tally: Tally,
    caught: int | None,
    stopped: CodexError | None,
    missing: int,
    output: str,
    *,
    sandboxed: bool = False,
    limited: Sequence[BatchResult] = (),
) -> int:
    """The last line on stderr and the exit status (see :data:`EXIT_STATUSES`)."""
    done = f"{tally.skipped + tally.done} of {tally.total} done"
    if caught is not None:
        _say(f"interrupted; {done}, run the same command again to continue")
        return 128 + caught
    if limited and stopped is None:
        resets = min((r.resets_at for r in limited if r.resets_at is not None), default=None)
        when = (
            f"the first resets at {resets.astimezone():%Y-%m-%d %H:%M %Z}"
            if resets is not None
            else "reset time unknown"
        )
        _say(
            f"{len(limited)} task(s) ended at the usage limit: every account stayed paused "
            f"longer than --max-wait ({when}); {tally.total - missing} of {tally.total} "
            "completed, run the same command again after that"
        )
        return EXIT_USAGE_LIMIT
    if stopped is not None:
        reason = _stop_reason(stopped, sandboxed=sandboxed)
        _say(f"stopped: {reason}; {done}, run the same command again to continue")
        return EXIT_NOT_COMPLETED
    if missing:
        _say(
            f"{missing} of {tally.total} tasks did not complete (see {output}; "
            "--retry-failed runs them again)"
        )
        return EXIT_NOT_COMPLETED
    return EXIT_COMPLETED


def _say(message: str) -> None:
    print(f"batch: {message}", file=sys.stderr, flush=True)


def batch_command(args: argparse.Namespace) -> int:
    """Run ``codex-anyio batch``; the exit status is one of :data:`EXIT_STATUSES`."""
    refusal = _refusal(args)
    if refusal is not None:
        print(
            f"codex-anyio batch: error: {refusal} (see codex-anyio batch --help)", file=sys.stderr
        )
        return EXIT_USAGE
    try:
        return run_until_stopped(lambda stop: _run(args, stop), backend=args.backend)
    except (TaskFileError, ResultsFileError) as exc:
        print(f"codex-anyio batch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CodexError as exc:
        if getattr(args, "verbose", False):
            traceback.print_exception(exc)
        print(f"codex-anyio batch: {one_line(exc)}", file=sys.stderr)
        return EXIT_NOT_COMPLETED
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
