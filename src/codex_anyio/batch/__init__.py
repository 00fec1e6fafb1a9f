"""Run many one-turn tasks through a :class:`~codex_anyio.CodexPool`, resumably.

The Python API behind ``codex-anyio batch``, for harnesses that embed it::

    from codex_anyio.batch import BatchTask, run_batch

    tasks = [BatchTask(id=str(i), prompt=f"Solve {i}") for i in range(1000)]
    async with run_batch(tasks, concurrency=16, timeout=120) as results:
        async for result in results:          # in completion order
            print(result.id, result.status, result.final_response)

Each task gets a fresh (lean, by default) thread and one turn, or, with ``goal``, a goal run
to its end on a persisted thread (``_goal_task``: the row's status then comes from the goal's,
``turns`` counts its turns, ``usage`` sums them). A result's ``status`` is the
turn's (``completed``, ``interrupted``, ``failed``), ``timeout`` when the task's deadline
interrupted its turn, or ``error`` when something else failed (the task is not valid, its
``cwd`` is not a directory, the runtime died under it, a request was rejected); ``failed``
and ``error`` are retried up to ``attempts`` times while another try could pass
(:func:`should_retry`: not for a task that is not valid as given, whose row says
``retryable=False``). One task that fails never ends the batch: it gets its own row.

Two things do end it, as one exception out of the ``async with``: an error every other task
would hit too (:func:`ends_batch`: a usage limit, :class:`~codex_anyio.UsageLimitError`; no
credentials; a runtime that cannot start; a pool with no member left), for which a row
written for each task would be a final failure that a re-run skips, so no row is made, the
running turns are interrupted, and the tasks left run on a re-run once the cause is gone
(after ``resets_at``, after ``codex-anyio login``); and a repeated task id (``ValueError``: the id
is what a results file resumes by; a list is checked before anything runs). Leaving the
``async with`` early (``break``, Ctrl-C, cancellation) likewise interrupts every running turn
on the server (shielded, bounded) and produces no result for them, so they run again on the
next attempt.

Resuming is a property of the files (``_results``, re-exported here): :class:`ResultWriter`
appends one whole row per result under the file's lock; :func:`read_results` reads a results
file back (each id's latest row), tolerating a row cut short (a run killed mid-write), so
``pending = pending_tasks(tasks, done)`` (``retry={"error", "timeout"}`` to run those again).

Through a model gateway (``gateway=``), every model call of every task is joined to its task,
and ``record=``/``trajectories=`` keep them: one cassette and one ATIF trajectory per task,
named by :func:`file_stem` of its id, written before its row (``_records``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._exceptions import ResultsFileError, ResultsWriteError, TaskFileError
from .._public import publish
from .._wire._config import CodexConfig
from ._attempt import RECYCLE_AFTER, RETRIED, attempt_task, ends_batch, should_retry
from ._files import STATUSES, BatchResult, BatchTask, check_task, parse_shard, read_tasks, shard_of
from ._local import BatchRun, run_batch
from ._records import file_stem
from ._results import NOT_COMPLETED, ResultWriter, pending_tasks, percentile, read_results

if TYPE_CHECKING:  # Ray is optional: its executor is imported when first asked for
    from ._ray._driver import ActorStatistics, RayBatchRun

__all__ = [
    "NOT_COMPLETED",
    "RECYCLE_AFTER",
    "RETRIED",
    "STATUSES",
    "ActorStatistics",
    "BatchResult",
    "BatchRun",
    "BatchTask",
    "RayBatchRun",
    "ResultWriter",
    "ResultsFileError",
    "ResultsWriteError",
    "TaskFileError",
    "attempt_task",
    "check_task",
    "ends_batch",
    "file_stem",
    "parse_shard",
    "pending_tasks",
    "percentile",
    "read_results",
    "read_tasks",
    "run_batch",
    "run_batch_on_ray",
    "shard_of",
    "should_retry",
]


def run_batch_on_ray(
    tasks: Iterable[BatchTask] | AsyncIterable[BatchTask],
    *,
    address: str | None = None,
    actors: int | None = None,
    slots: int | None = None,
    servers: int | None = None,
    timeout: float | None = None,
    attempts: int = 1,
    model: str | None = None,
    codex_config: CodexConfig | None = None,
    thread_options: Mapping[str, Any] | None = None,
    pool_options: Mapping[str, Any] | None = None,
    max_restarts: int = 3,
    watchdog_grace: float | None = None,
    init_options: Mapping[str, Any] | None = None,
    actor_options: Mapping[str, Any] | None = None,
) -> RayBatchRun:
    """:func:`run_batch` with the pools on Ray actors: the same results, from a cluster.

    ``async with run_batch_on_ray(tasks, address="auto") as results: async for r in results``.
    One async actor per node (per node with a ``codex_slots`` resource, if any has one) hosts
    a :class:`CodexPool`; each keeps as many tasks in flight as it has slots, and the next task
    goes to the first actor that frees one. Needs ``pip install 'codex-anyio[ray]'``; the
    driver may run on asyncio or Trio. See ``_batch_ray`` for deadlines, deaths and Ctrl-C.

    :param address: passed to ``ray.init`` when Ray is not initialized yet (``None``: Ray's
        own choice, ``"auto"``: a running cluster, ``"local"``: a new one on this machine);
        a run that starts Ray shuts it down at the end, one that finds it running leaves it.
    :param actors: that many actors spread over the cluster, instead of one per node.
    :param slots: tasks in flight per actor (default: its ``codex_slots``, else 8 per CPU of
        its node).
    :param servers: app-server processes per actor's pool (default: 1 per CPU of the node, 2-32).
    :param timeout: seconds per task (a task's own ``timeout`` wins), applied in the actor.
    :param attempts: tries per task while its status is ``failed`` or ``error`` (and the row
        is ``retryable``), or its actor died under it; the row's ``attempt`` says which try
        it is.
    :param max_restarts: Ray restarts of each actor (its calls are never retried by Ray).
    :param watchdog_grace: seconds past a task's deadline before the driver cancels the call.
    :param init_options: more ``ray.init`` keywords; ``actor_options``: more actor options
        (``runtime_env``, ``resources``, ...). The rest as for :func:`run_batch`.
    """
    from ._ray._driver import WATCHDOG_GRACE
    from ._ray._driver import run_batch_on_ray as run_on_ray

    return run_on_ray(
        tasks,
        address=address,
        actors=actors,
        slots=slots,
        servers=servers,
        timeout=timeout,
        attempts=attempts,
        model=model,
        codex_config=codex_config,
        thread_options=thread_options,
        pool_options=pool_options,
        max_restarts=max_restarts,
        watchdog_grace=WATCHDOG_GRACE if watchdog_grace is None else watchdog_grace,
        init_options=init_options,
        actor_options=actor_options,
    )


publish(globals())


def __getattr__(name: str) -> Any:
    # The Ray executor's types, imported on first use: importing the executor is cheap (it
    # imports Ray itself only when a run starts), but a batch that never runs on Ray should
    # not load it.
    if name in ("ActorStatistics", "RayBatchRun"):
        from ._ray import _driver

        value = getattr(_driver, name)
        value.__module__ = __name__  # as publish() does for the eager names
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
