"""The batch runner: the Python API against the real runtime, the results file, and the
``codex-anyio batch`` command (progress in a non-TTY, Ctrl-C then resume)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from codex_anyio import (
    ClusterError,
    CodexConfig,
    CredentialsMissingError,
    StartupError,
    UsageLimitError,
)
from codex_anyio.batch import (
    BatchResult,
    BatchTask,
    parse_shard,
    pending_tasks,
    read_results,
    read_tasks,
    run_batch,
    run_batch_on_ray,
    shard_of,
)
from codex_anyio.serve import serve_app_server
from codex_anyio.testing import (
    RecordedRequest,
    Reply,
    ScriptedModel,
    failed,
    message,
    open_scripted_pool,
    scripted_env,
    stall,
    usage_limit_reached,
    write_codex_home,
)

pytestmark = pytest.mark.anyio


def prompt_of(request: RecordedRequest) -> str:
    texts = [
        part.get("text", "")
        for item in request.body.get("input", [])
        if item.get("role") == "user"
        for part in item.get("content", [])
    ]
    return texts[-1] if texts else ""


async def test_run_batch_yields_one_result_per_task(tmp_path: Path) -> None:
    def script(request: RecordedRequest) -> Reply:
        prompt = prompt_of(request)
        return message('{"answer": 42}') if prompt == "json please" else message(f"re: {prompt}")

    tasks = [
        BatchTask(id="a", prompt="first"),
        BatchTask(id="b", prompt="second"),
        BatchTask(
            id="c",
            prompt="json please",
            output_schema={
                "type": "object",
                "properties": {"answer": {"type": "integer"}},
                "required": ["answer"],
                "additionalProperties": False,
            },
        ),
    ]
    with anyio.fail_after(60):
        async with open_scripted_pool(script, servers=2, directory=tmp_path) as s:
            async with run_batch(tasks, pool=s.pool, concurrency=2) as results:
                got = {r.id: r async for r in results}
    assert sorted(got) == ["a", "b", "c"]
    assert {r.status for r in got.values()} == {"completed"}
    assert got["a"].final_response == "re: first"
    assert got["c"].structured_output == {"answer": 42}
    assert got["a"].total_tokens == 15
    assert got["a"].thread_id
    assert got["a"].turn_id
    assert got["a"].attempt == 1


async def test_a_task_deadline_interrupts_its_turn_and_reports_timeout(tmp_path: Path) -> None:
    def script(request: RecordedRequest) -> Reply:
        return stall() if prompt_of(request) == "slow" else message("quick")

    tasks = [BatchTask(id="slow", prompt="slow", timeout=0.5), BatchTask(id="fast", prompt="hi")]
    with anyio.fail_after(60):
        async with open_scripted_pool(script, servers=2, directory=tmp_path) as s:
            async with run_batch(tasks, pool=s.pool, timeout=30) as results:
                got = {r.id: r async for r in results}
            # The runtime dropped the model's stream: the turn was interrupted, not left running
            # (unless the deadline came before the turn reached the model, on a loaded machine).
            for slow in (e for e in s.model.exchanges if prompt_of(e.request) == "slow"):
                await slow.abandoned.wait()
    assert got["slow"].status == "timeout"
    assert got["slow"].error is not None
    assert got["slow"].error["type"] == "Timeout"
    assert got["fast"].status == "completed"


async def test_failed_tasks_are_retried_up_to_the_attempt_limit(tmp_path: Path) -> None:
    replies = iter([failed("flaky"), message("second time lucky")])

    def script(request: RecordedRequest) -> Reply:
        return next(replies)

    with anyio.fail_after(60):
        async with open_scripted_pool(script, servers=2, directory=tmp_path) as s:
            run = run_batch([BatchTask(id="x", prompt="go")], pool=s.pool, attempts=2)
            async with run as results:
                got = [r async for r in results]
    assert [(r.status, r.attempt, r.final_response) for r in got] == [
        ("completed", 2, "second time lucky")
    ]


async def test_a_task_that_cannot_run_gets_its_own_error_row_and_the_others_complete(
    tmp_path: Path,
) -> None:
    tasks = [
        BatchTask(id="good", prompt="hi"),
        BatchTask(id="config", prompt="p", config="abc"),  # type: ignore[arg-type]
        BatchTask(id="timeout", prompt="p", timeout=-1),
        BatchTask(id="approval", prompt="p", approval="maybe"),
        BatchTask(id="rejected", prompt="p", config={"model_reasoning_effort": 5}),
        BatchTask(id="also good", prompt="hi"),
    ]
    with anyio.fail_after(60):
        async with open_scripted_pool(lambda r: message("ok"), directory=tmp_path) as s:
            async with run_batch(tasks, pool=s.pool, concurrency=2) as results:
                got = {r.id: r async for r in results}
    assert {i: r.status for i, r in got.items()} == {
        "good": "completed",
        "config": "error",
        "timeout": "error",
        "approval": "error",
        "rejected": "error",  # the runtime refused its thread: still only this task's row
        "also good": "completed",
    }
    messages = {i: (r.error or {}).get("message", "") for i, r in got.items()}
    assert "'config' must be an object" in messages["config"]
    assert "'timeout' must be a positive number of seconds" in messages["timeout"]
    assert "'approval' must be one of" in messages["approval"]
    assert "model_reasoning_effort" in messages["rejected"]


@pytest.mark.parametrize("source", ["generator", "async generator"])
async def test_a_repeated_id_from_a_lazy_source_ends_the_batch_before_it_runs_twice(
    tmp_path: Path, source: str
) -> None:
    repeated = [BatchTask(id="a", prompt="first"), BatchTask(id="a", prompt="second")]

    def tasks() -> Iterator[BatchTask]:
        yield from repeated

    async def async_tasks() -> AsyncGenerator[BatchTask, None]:
        for task in repeated:
            yield task

    with anyio.fail_after(60):
        async with (
            open_scripted_pool(lambda r: message("ok"), directory=tmp_path) as s,
            aclosing(async_tasks()) as from_async,  # the batch leaves it unfinished
        ):
            lazy = tasks() if source == "generator" else from_async
            with pytest.raises(ValueError, match="'a' appears twice"):
                async with run_batch(lazy, pool=s.pool, concurrency=1) as results:
                    async for _ in results:
                        pass
            assert "second" not in [prompt_of(r) for r in s.model.requests]


async def test_past_max_wait_a_usage_limit_ends_the_tasks_left_with_usage_limit_rows(
    tmp_path: Path,
) -> None:
    resets = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(microsecond=0)
    answered = 0

    def script(request: RecordedRequest) -> Reply:
        nonlocal answered
        answered += 1
        return message("ok") if answered <= 2 else usage_limit_reached(resets)

    tasks = [BatchTask(id=f"t{i}", prompt=f"task {i}") for i in range(10)]
    got: list[BatchResult] = []
    with anyio.fail_after(60):
        async with open_scripted_pool(script, directory=tmp_path, max_wait=0) as s:
            async with run_batch(tasks, pool=s.pool, concurrency=1, attempts=3) as results:
                async for result in results:
                    got.append(result)
            requests = len(s.model.requests)
    statuses = [r.status for r in got]
    assert statuses == ["completed"] * 2 + ["usage_limit"] * 8
    assert requests == 3  # the paused account got no request after its limit, none retried
    assert {r.attempt for r in got} == {1}  # waiting for an account uses no attempt
    limited = got[2].error
    assert limited is not None
    assert limited["type"] == "UsageLimitWaitError"
    assert limited["resets_at"] == resets.isoformat()
    # A re-run runs them again, as if they had no row.
    assert [t.id for t in pending_tasks(tasks, {r.id: r for r in got})] == [
        f"t{i}" for i in range(2, 10)
    ]
    # The Ray executor gets a UsageLimitError back from an actor's process: pickled.
    error = UsageLimitError(None, None, resets_at=resets)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.resets_at, str(copy)) == (resets, str(error))


async def test_a_task_that_hits_the_usage_limit_runs_again_once_the_account_resets(
    tmp_path: Path,
) -> None:
    resets = datetime.fromtimestamp(int(time.time()) + 2, timezone.utc)
    answered = 0

    def script(request: RecordedRequest) -> Reply:
        nonlocal answered
        answered += 1
        return usage_limit_reached(resets) if answered == 2 else message(f"ok {answered}")

    tasks = [BatchTask(id=f"t{i}", prompt=f"task {i}", timeout=30) for i in range(3)]
    with anyio.fail_after(60):
        async with open_scripted_pool(script, directory=tmp_path) as s:
            async with run_batch(tasks, pool=s.pool, concurrency=1) as results:
                got = [result async for result in results]
    assert [(r.id, r.status, r.attempt) for r in got] == [
        ("t0", "completed", 1),
        ("t1", "completed", 1),  # requeued, not failed, and no attempt used
        ("t2", "completed", 1),
    ]
    assert [r.final_response for r in got] == ["ok 1", "ok 3", "ok 4"]


async def test_a_runtime_that_loses_the_race_to_initialize_codex_home_is_started_again(
    tmp_path: Path,
) -> None:
    # The loser of two runtimes starting at once on a new CODEX_HOME exits with this line; a
    # wrapper makes the first start lose, every time (the real race is below, in the CLI).
    starts = tmp_path / "starts"
    wrapper = tmp_path / "codex"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'echo start >> "{starts}"\n'
        f'if [ "$(wc -l < "{starts}")" -eq 1 ]; then\n'
        '  echo "Error: failed to initialize sqlite state runtime under $CODEX_HOME: '
        'failed to initialize state runtime at $CODEX_HOME" >&2\n'
        "  exit 1\n"
        "fi\n"
        f'exec "{CodexConfig().resolve_bin()}" "$@"\n'
    )
    wrapper.chmod(0o755)
    with anyio.fail_after(60):
        async with ScriptedModel(lambda r: message("ok")) as model:
            home = write_codex_home(tmp_path / "home", base_url=model.base_url)
            config = CodexConfig(codex_bin=wrapper, env=scripted_env(home), cwd=tmp_path)
            tasks = [BatchTask(id="1", prompt="p")]
            async with run_batch(tasks, servers=1, codex_config=config) as results:
                got = [r.status async for r in results]
    assert got == ["completed"]
    assert starts.read_text().split() == ["start", "start"]


async def _run_cli(
    tasks: Path,
    output: Path,
    env: dict[str, str],
    *,
    interrupt_after: int | None = None,
    signum: int = signal.SIGINT,
    backend: str = "asyncio",
    extra: tuple[str, ...] = (),
    python: tuple[str, ...] = ("-m", "codex_anyio"),
    wrapper: tuple[str, ...] = (),
) -> tuple[int, list[str], str]:
    """Run ``codex-anyio batch`` (plain progress: its stderr is a pipe); with
    ``interrupt_after``, send ``signum`` once that many results have been reported. ``python``:
    what the interpreter runs instead of the installed command (code that injects a fault);
    ``wrapper``: a command that runs it (``unshare -rn``: no network at all)."""
    argv = [*wrapper, sys.executable, *python, "batch", str(tasks), "-o", str(output)]
    argv += ["--servers", "2", "--concurrency", "2", "--backend", backend, *extra]
    process = await anyio.open_process(argv, env=env)
    lines: list[str] = []
    async with process:
        assert process.stderr is not None
        assert process.stdout is not None
        buffer = ""
        async for chunk in TextReceiveStream(process.stderr):
            buffer += chunk
            *complete, buffer = buffer.split("\n")
            lines += complete
            reported = sum(line.startswith("[") for line in lines)
            if interrupt_after is not None and reported >= interrupt_after:
                process.send_signal(signum)
                interrupt_after = None
        stdout = "".join([chunk async for chunk in TextReceiveStream(process.stdout)])
        code = await process.wait()
    return code, lines, stdout


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
async def test_the_cli_resumes_after_a_stop_signal_without_repeating_or_losing_a_task(
    tmp_path: Path, anyio_backend: str, signum: int, status: int
) -> None:
    ids = [f"t{i}" for i in range(8)]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": i, "prompt": f"task {i}"}) + "\n" for i in ids))
    output = tmp_path / "results.jsonl"

    def script(request: RecordedRequest) -> Reply:
        return message(f"done: {prompt_of(request)}", deltas=4, delay=0.1)

    with anyio.fail_after(120):
        async with ScriptedModel(script) as model:
            home = write_codex_home(tmp_path / "home", base_url=model.base_url)
            env = {**os.environ, **scripted_env(home)}
            code, lines, _ = await _run_cli(
                tasks, output, env, interrupt_after=2, signum=signum, backend=anyio_backend
            )
            assert code == status, "\n".join(lines)
            first = [json.loads(line)["id"] for line in output.read_text().splitlines()]
            assert 2 <= len(first) < len(ids)
            # Progress in a non-TTY: a header, then one plain line per result.
            assert lines[0].startswith("batch: 8 tasks, 0 already done")
            assert any(line.startswith("[1/8] completed t") for line in lines)
            assert any("run the same command again" in line for line in lines)

            code, lines, stdout = await _run_cli(
                tasks, output, env, interrupt_after=None, backend=anyio_backend
            )
            assert code == 0
            assert lines[0].startswith(f"batch: 8 tasks, {len(first)} already done")
            assert "batch summary" in stdout
            assert "completed" in stdout
    every = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["id"] for r in every) == ids  # none twice, none missing
    assert {r["status"] for r in every} == {"completed"}


def test_the_rich_progress_and_summary_render_counts_and_tokens() -> None:
    import io

    from codex_anyio._cli._batch_report import RichProgress, Tally, print_summary

    tally = Tally(total=3, skipped=1)
    run = run_batch([], concurrency=2)
    out = io.StringIO()
    with RichProgress(tally, run, out) as progress:
        for i, status in enumerate(["completed", "timeout"]):
            result = BatchResult(
                id=str(i),
                status=status,
                duration_ms=1000 * (i + 1),
                usage={"total": {"totalTokens": 15}},
                error={"type": "Timeout", "message": "too slow"} if status == "timeout" else None,
            )
            first = tally.add(result)
            progress.update(result)
            if first is not None:
                progress.note(f"first {first.describe()}")
    assert "3/3" in out.getvalue()
    assert "30 tokens" in out.getvalue()
    assert "first timeout: Timeout: too slow" in out.getvalue()  # above the bar
    summary = io.StringIO()
    print_summary(tally, True, summary)
    text = summary.getvalue()
    assert "batch summary" in text
    assert "timeout" in text
    assert "duration p95" in text
    assert "1 timeout: Timeout: too slow" in text


def test_three_shards_together_cover_every_id_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    ids = [f"task-{i}" for i in range(300)]
    path.write_text("".join(json.dumps({"id": i, "prompt": "p"}) + "\n" for i in ids))
    shards = [[t.id for t in read_tasks(path, shard=(i, 3))] for i in range(3)]
    assert sorted(i for shard in shards for i in shard) == sorted(ids)  # each id once
    assert all(shard for shard in shards)
    # Stable across processes and machines: sha256 of the id, not the salted hash().
    assert (
        shard_of("task-0", 3) == int.from_bytes(hashlib.sha256(b"task-0").digest()[:8], "big") % 3
    )
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="i/N"):
            parse_shard(bad)


def test_the_batch_modules_do_not_import_ray() -> None:
    code = (
        "import sys, codex_anyio, codex_anyio.batch, codex_anyio._cli._batch\n"
        "from codex_anyio.batch import RayBatchRun, run_batch_on_ray\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_without_ray_installed_a_ray_run_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an absent package looks like
    with pytest.raises(ClusterError, match=r"codex-anyio\[ray\]"):
        async with run_batch_on_ray([BatchTask(id="1", prompt="p")]):
            pass


async def test_the_ray_driver_holds_a_task_and_its_actor_until_the_reset_a_usage_limit_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without Ray: the driver's bookkeeping for a finished call (the Ray tests, in their
    # namespace, run the rest). An actor never waits for a reset itself (its pools run with
    # max_wait=0: the watchdog would take the wait for a hung task); it returns the row.
    from codex_anyio.batch._ray import _driver as _batch_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # nothing here may need Ray
    resets = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(microsecond=0)
    error = {"type": "UsageLimitWaitError", "message": "m", "resets_at": resets.isoformat()}
    row = BatchResult(id="t", status="usage_limit", attempt=2, error=error)
    task = BatchTask(id="t", prompt="p")

    def finished(run: Any) -> tuple[Any, deque[tuple[BatchTask, int]], list[BatchResult]]:
        actor = _batch_ray._Actor(0, handle=None, slots=2, in_flight=1)
        run._actors = [actor]
        run._flights["ref"] = _batch_ray._Flight(actor, task, 2, 0, 0)
        queue: deque[tuple[BatchTask, int]] = deque()
        return actor, queue, run._settle("ref", row, queue)

    waiting = run_batch_on_ray([task], attempts=3, pool_options={"max_wait": 600})
    assert waiting._pool_options["max_wait"] == 0  # what the actors' pools get
    actor, queue, rows = finished(waiting)
    assert rows == []  # not final: back in the queue, the same attempt
    assert list(queue) == [(task, 2)]
    assert (actor.paused, actor.free) == (True, 0)
    assert waiting._first_resume() == resets.timestamp()
    assert not waiting._wait_over()

    impatient = run_batch_on_ray([task], attempts=3, pool_options={"max_wait": 0})
    actor, queue, rows = finished(impatient)
    assert rows == [row]  # every actor paused past max_wait: the row is final
    assert not queue

    async def more() -> AsyncGenerator[BatchTask, None]:
        yield BatchTask(id="u", prompt="p")

    queue.append((BatchTask(id="q", prompt="p"), 3))
    left = await impatient._limited_rows(queue, more())
    assert [(r.id, r.status, r.attempt) for r in left] == [
        ("q", "usage_limit", 3),
        ("u", "usage_limit", 1),
    ]
    assert left[0].error is not None
    assert left[0].error["resets_at"] == resets.isoformat()


def test_the_ray_driver_retries_by_the_cores_rule_and_ends_on_every_batch_ending_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same rule as the local runner (``_attempt``): a row that cannot pass on another try
    # is final, and missing credentials or a runtime that cannot start end the run, also
    # when they come back from an actor's process (pickled, wrapped by Ray).
    from codex_anyio.batch._ray import _driver as _batch_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # nothing here may need Ray

    class RayTaskError(Exception):
        def __init__(self, cause: BaseException) -> None:
            self.cause = cause

    def settle(value: Any) -> tuple[list[BatchResult], list[int]]:
        """What the driver makes of one finished call: rows, and attempts queued again."""
        run = run_batch_on_ray([BatchTask(id="t", prompt="p")], attempts=3)
        actor = _batch_ray._Actor(0, handle=None, slots=1, in_flight=1)
        run._flights["ref"] = _batch_ray._Flight(actor, BatchTask(id="t", prompt="p"), 1, 0, 0)
        queue: deque[tuple[BatchTask, int]] = deque()
        rows = run._settle("ref", value, queue)
        return rows, [attempt for _, attempt in queue]

    error = {"type": "ValueError", "message": "'cwd' '/x' does not exist"}
    final = BatchResult(id="t", status="error", error=error, retryable=False)
    assert settle(final) == ([final], [])
    assert settle(BatchResult(id="t", status="error")) == ([], [2])
    for ending in (
        pickle.loads(pickle.dumps(CredentialsMissingError())),
        pickle.loads(pickle.dumps(StartupError("bad config", returncode=1))),
    ):
        for raised in (ending, RayTaskError(ending)):
            with pytest.raises(type(ending)) as caught:
                settle(raised)
            assert caught.value is ending


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_three_cli_shards_of_one_file_run_every_task_exactly_once(
    tmp_path: Path, anyio_backend: str
) -> None:
    ids = [f"t{i}" for i in range(9)]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": i, "prompt": f"task {i}"}) + "\n" for i in ids))

    def script(request: RecordedRequest) -> Reply:
        return message(f"done: {prompt_of(request)}")

    with anyio.fail_after(120):
        async with ScriptedModel(script) as model:
            home = write_codex_home(tmp_path / "home", base_url=model.base_url)
            env = {**os.environ, **scripted_env(home)}
            for index in range(3):
                code, lines, _ = await _run_cli(
                    tasks,
                    tmp_path / f"results-{index}.jsonl",
                    env,
                    interrupt_after=None,
                    backend=anyio_backend,
                    extra=("--shard", f"{index}/3"),
                )
                assert code == 0, "\n".join(lines)
    rows = [
        json.loads(line)
        for index in range(3)
        for line in (tmp_path / f"results-{index}.jsonl").read_text().splitlines()
    ]
    assert sorted(r["id"] for r in rows) == sorted(ids)  # each id once, in one shard
    assert {r["status"] for r in rows} == {"completed"}


# -- the command: refusals, statuses, stops -----------------------------------------------------

GOOD_TASKS = "".join(json.dumps({"id": f"t{i}", "prompt": f"task {i}"}) + "\n" for i in range(3))
SECONDS = "must be a positive number of seconds, not"
COUNT = "must be a whole number >= 1, not '0'"
TASKS, OUT = ["{tasks}"], ["-o", "{out}"]


def batch_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``codex-anyio batch ARGS`` run to its end, stdout and stderr pipes (no runtime is
    started for what is refused)."""
    argv = [sys.executable, "-m", "codex_anyio", "batch", *args]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False
    )


@pytest.mark.parametrize(
    ("args", "bad_line", "says"),
    [
        pytest.param([*TASKS, *OUT, "--timeout", "0"], None, f"{SECONDS} '0'", id="timeout-0"),
        pytest.param([*TASKS, *OUT, "--timeout", "nan"], None, f"{SECONDS} 'nan'", id="t-nan"),
        pytest.param([*TASKS, *OUT, "--attempts", "0"], None, f"attempts: {COUNT}", id="att-0"),
        pytest.param([*TASKS, *OUT, "--servers", "0"], None, f"servers: {COUNT}", id="serv-0"),
        pytest.param([*TASKS, *OUT, "--concurrency", "0"], None, f"y: {COUNT}", id="conc-0"),
        pytest.param(["{tmp}/nope.jsonl", *OUT], None, "cannot read the tasks", id="no-tasks"),
        pytest.param([*TASKS, "-o", "{tmp}"], None, "Is a directory", id="output-a-directory"),
        pytest.param(
            [*TASKS, "-o", "{tmp}/no/r.jsonl"], None, "folder does not exist", id="no-folder"
        ),
        pytest.param([*TASKS, "-o", "{tasks}"], None, "is the tasks file", id="output-tasks"),
        pytest.param(
            [*TASKS, *OUT, "--scripted", "--ray"], None, "not with --ray", id="scripted-ray"
        ),
        pytest.param(
            [*TASKS, *OUT, "--scripted", "--connect", "ws://127.0.0.1:9"],
            None,
            "not allowed with argument --scripted",
            id="scripted-connect",
        ),
        pytest.param(
            [*TASKS, *OUT, "--token-env", "T"], None, "go with --connect", id="token-no-connect"
        ),
        pytest.param(
            [*TASKS, *OUT, "--connect", "http://h:1"], None, "use ws://, wss://", id="connect-http"
        ),
        pytest.param(
            [*TASKS, *OUT, "--connect", "ws://127.0.0.1:9", "--token-file", "{tmp}/nope"],
            None,
            "--connect: cannot read the token file",
            id="connect-no-token-file",
        ),
        pytest.param(
            [*TASKS, *OUT, "--connect", "ws://127.0.0.1:9", "--config", "model=x"],
            None,
            "with --connect, the server's own",
            id="connect-config",
        ),
        pytest.param([*TASKS, "-o", "{notes}"], None, "not a results file", id="output-notes"),
        pytest.param(
            [*TASKS, "-o", "/dev/stdout"], None, "not a regular file", id="output-dev-stdout"
        ),
        pytest.param(
            ["{bad}", *OUT],
            '{"id": "x", "prompt": "p", "config": "abc"}',
            "bad.jsonl:4: task 'x': 'config' must be an object",
            id="task-config-abc",
        ),
        pytest.param(
            ["{bad}", *OUT],
            '{"id": "\\ud800", "prompt": "p"}',
            "bad.jsonl:4: task '\\ud800': 'id' '\\ud800' is not valid Unicode",
            id="task-id-surrogate",
        ),
    ],
)
def test_the_cli_refuses_bad_arguments_and_files_in_one_line_with_status_2_running_nothing(
    tmp_path: Path, args: list[str], bad_line: str | None, says: str
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(GOOD_TASKS)
    notes = tmp_path / "notes.txt"
    notes.write_text("a\nb")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD_TASKS + f"{bad_line}\n")
    out = tmp_path / "results.jsonl"
    paths = {"tasks": tasks, "out": out, "notes": notes, "bad": bad, "tmp": tmp_path}
    done = batch_cli(*(arg.format(**paths) for arg in args))
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert says in done.stderr
    assert done.stdout == ""
    assert not out.exists()
    assert (tasks.read_text(), notes.read_text()) == (GOOD_TASKS, "a\nb")


def test_a_cli_run_on_a_results_file_another_run_holds_exits_2_naming_it(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(GOOD_TASKS)
    output = tmp_path / "results.jsonl"
    output.write_text(json.dumps(BatchResult(id="t0", status="completed").to_json()) + "\n")
    before = output.read_text()
    with open(output, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a running batch holds
        done = batch_cli(str(tasks), "-o", str(output))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"codex-anyio batch: the results file {output} is in use by another batch run; "
        "wait for it to end (it resumes the same way) or write to another file"
    )
    assert output.read_text() == before


async def _scripted_env(tmp_path: Path, model: ScriptedModel, **home: Any) -> dict[str, str]:
    codex_home = write_codex_home(tmp_path / "home", base_url=model.base_url, **home)
    return {**os.environ, **scripted_env(codex_home)}


def _ids(output: Path) -> list[str]:
    return [json.loads(line)["id"] for line in output.read_text().splitlines()]


def _tasks_file(tmp_path: Path, count: int, **extra: Any) -> Path:
    tasks = tmp_path / "tasks.jsonl"
    rows = [{"id": f"t{i}", "prompt": f"task {i}"} for i in range(count)]
    for task_id, fields in extra.items():
        rows.append({"id": task_id, "prompt": "p", **fields})
    tasks.write_text("".join(json.dumps(task) + "\n" for task in rows))
    return tasks


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_cli_ends_tasks_past_max_wait_with_status_3_and_a_rerun_runs_them(
    tmp_path: Path, anyio_backend: str
) -> None:
    resets = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(microsecond=0)
    limited, answered = True, 0

    def script(request: RecordedRequest) -> Reply:
        nonlocal answered
        answered += 1
        return usage_limit_reached(resets) if limited and answered > 2 else message("ok")

    tasks, output = _tasks_file(tmp_path, 10), tmp_path / "results.jsonl"
    one_at_a_time = ("--concurrency", "1", "--attempts", "3", "--max-wait", "0")
    with anyio.fail_after(120):
        async with ScriptedModel(script) as model:
            env = await _scripted_env(tmp_path, model)
            code, lines, _ = await _run_cli(tasks, output, env, extra=one_at_a_time)
            assert code == 3, "\n".join(lines)
            assert len(model.requests) == 3  # the limit was not retried
            rows = [json.loads(line) for line in output.read_text().splitlines()]
            assert [row["status"] for row in rows] == ["completed"] * 2 + ["usage_limit"] * 8
            assert any(
                "paused until " in line and "(account 0: usage limit" in line for line in lines
            ), "\n".join(lines)
            assert lines[-1] == (
                "batch: 8 task(s) ended at the usage limit: every account stayed paused longer "
                f"than --max-wait (the first resets at {resets.astimezone():%Y-%m-%d %H:%M %Z}); "
                "2 of 10 completed, run the same command again after that"
            )
            limited = False  # the limit has reset
            code, lines, _ = await _run_cli(tasks, output, env, extra=one_at_a_time)
            assert code == 0, "\n".join(lines)
            assert lines[0].startswith("batch: 10 tasks, 2 already done")
    latest = {row["id"]: row["status"] for row in map(json.loads, output.read_text().splitlines())}
    assert latest == {f"t{i}": "completed" for i in range(10)}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_cli_moves_work_off_an_account_at_its_usage_limit_with_accounts(
    tmp_path: Path, anyio_backend: str
) -> None:
    resets = (datetime.now(timezone.utc) + timedelta(hours=2)).replace(microsecond=0)
    answered = 0

    def limited_after_two(request: RecordedRequest) -> Reply:
        nonlocal answered
        answered += 1
        return message("from a") if answered <= 2 else usage_limit_reached(resets)

    tasks, output = _tasks_file(tmp_path, 12), tmp_path / "results.jsonl"
    with anyio.fail_after(120):
        async with (
            ScriptedModel(limited_after_two) as a,
            ScriptedModel(lambda request: message("from b")) as b,
        ):
            env = await _scripted_env(tmp_path, a)
            homes = [
                write_codex_home(tmp_path / name, base_url=model.base_url)
                for name, model in (("account-a", a), ("account-b", b))
            ]
            accounts = ("--accounts", f"{homes[0]}{os.pathsep}{homes[1]}")
            code, lines, _ = await _run_cli(tasks, output, env, extra=accounts)
            served = (len(a.requests), len(b.requests))
    assert code == 0, "\n".join(lines)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == sorted(f"t{i}" for i in range(12))  # once each
    assert {row["status"] for row in rows} == {"completed"}
    assert {row["attempt"] for row in rows} == {1}
    answers = sorted(row["final_response"] for row in rows)
    assert answers == ["from a"] * 2 + ["from b"] * 10
    # Account a got at most one request per turn already running there at its limit.
    assert served[0] <= 3 + 1, served
    assert any("(account 0: usage limit reached)" in line for line in lines), "\n".join(lines)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_cli_exits_1_when_a_task_did_not_complete_after_running_the_others(
    tmp_path: Path, anyio_backend: str
) -> None:
    # The runtime refuses this task's config: its own error row, the others go on.
    rejected = {"config": {"model_reasoning_effort": 5}}
    tasks, output = _tasks_file(tmp_path, 3, rejected=rejected), tmp_path / "results.jsonl"
    with anyio.fail_after(120):
        async with ScriptedModel(lambda request: message("ok")) as model:
            env = await _scripted_env(tmp_path, model)
            code, lines, _ = await _run_cli(tasks, output, env)
    assert code == 1, "\n".join(lines)
    assert lines[-1] == (
        f"batch: 1 of 4 tasks did not complete (see {output}; --retry-failed runs them again)"
    )
    rows = {row["id"]: row["status"] for row in map(json.loads, output.read_text().splitlines())}
    assert rows == {"t0": "completed", "t1": "completed", "t2": "completed", "rejected": "error"}


FULL_DISK_AFTER_TWO_ROWS = """
import errno, os, sys
from codex_anyio.batch import _results as _batch_results
from codex_anyio.__main__ import main

real, rows = _batch_results._write_all, []

def full_disk(fd, data):
    rows.append(data)
    if len(rows) <= 2:
        return real(fd, data)
    real(fd, data[: len(data) // 2])  # the disk took half the row
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

_batch_results._write_all = full_disk
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_full_disk_stops_the_cli_in_one_line_leaving_whole_rows_and_a_rerun_finishes(
    tmp_path: Path, anyio_backend: str
) -> None:
    tasks, output = _tasks_file(tmp_path, 5), tmp_path / "results.jsonl"
    with anyio.fail_after(120):
        async with ScriptedModel(lambda request: message("ok")) as model:
            env = await _scripted_env(tmp_path, model)
            python = ("-c", FULL_DISK_AFTER_TWO_ROWS)
            code, lines, _ = await _run_cli(tasks, output, env, python=python)
            assert code == 1, "\n".join(lines)
            assert not any("Traceback" in line for line in lines), "\n".join(lines)
            assert lines[-1].startswith(
                f"batch: stopped: could not write to the results file {output}: "
                f"{os.strerror(errno.ENOSPC)}; 2 of 5 done"
            )
            text = output.read_text()
            assert text.endswith("\n")
            assert len(_ids(output)) == 2  # whole rows only: the half row was cut off
            code, lines, _ = await _run_cli(tasks, output, env)  # space freed
            assert code == 0, "\n".join(lines)
    assert sorted(_ids(output)) == [f"t{i}" for i in range(5)]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_runtime_that_cannot_start_is_one_line_naming_its_reason_and_status_1(
    tmp_path: Path, anyio_backend: str
) -> None:
    tasks, output = _tasks_file(tmp_path, 2), tmp_path / "results.jsonl"
    with anyio.fail_after(120):
        async with ScriptedModel(lambda request: message("ok")) as model:
            env = await _scripted_env(tmp_path, model, approval_policy="untrusted")
            code, lines, _ = await _run_cli(tasks, output, env)
    assert code == 1, "\n".join(lines)
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    assert lines[-1].startswith("batch: stopped: the app-server exited during start-up")
    assert 'Error: approval_policy = "untrusted" is no longer supported' in lines[-1]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_batches_started_at_once_on_a_new_codex_home_all_start_and_complete(
    tmp_path: Path, anyio_backend: str
) -> None:
    # Their runtimes race to create the new home's state database; the losers start again.
    tasks = _tasks_file(tmp_path, 2)
    codes: dict[int, tuple[int, list[str]]] = {}
    with anyio.fail_after(120):
        async with ScriptedModel(lambda request: message("ok")) as model:
            env = await _scripted_env(tmp_path, model)

            async def one(index: int) -> None:
                output = tmp_path / f"results-{index}.jsonl"
                code, lines, _ = await _run_cli(tasks, output, env, extra=("--servers", "1"))
                codes[index] = (code, lines)

            async with anyio.create_task_group() as tg:
                for index in range(3):
                    tg.start_soon(one, index)
    assert {code for code, _ in codes.values()} == {0}, codes


# -- what went wrong: said when it happens, counted at the end, retried only if it can pass -----


def _netns_available() -> bool:
    unshare = shutil.which("unshare")
    return unshare is not None and subprocess.run([unshare, "-rn", "true"]).returncode == 0


requires_netns = pytest.mark.skipif(
    not _netns_available(), reason="needs `unshare -rn` (a private network namespace)"
)


def _rows(output: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.read_text().splitlines()]


async def test_a_task_whose_cwd_is_not_a_directory_gets_one_error_row_and_no_retry(
    tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("")
    tasks = [
        BatchTask(id="good", prompt="hi", cwd=str(tmp_path)),
        BatchTask(id="missing", prompt="p", cwd=str(tmp_path / "no-such-folder")),
        BatchTask(id="a file", prompt="p", cwd=str(tmp_path / "a-file")),
        BatchTask(id="invalid", prompt="p", timeout=-1),
        BatchTask(id="also good", prompt="hi"),
    ]
    with anyio.fail_after(60):
        async with ScriptedModel(lambda request: message("ok")) as model:
            home = write_codex_home(tmp_path / "home", base_url=model.base_url)
            config = CodexConfig(env=scripted_env(home), cwd=tmp_path)
            run = run_batch(tasks, servers=1, codex_config=config, attempts=3)
            async with run as results:
                got = {r.id: r async for r in results}
            requests = len(model.requests)
    assert {i: (r.status, r.attempt, r.retryable) for i, r in got.items()} == {
        "good": ("completed", 1, True),
        "missing": ("error", 1, False),  # tried once: another try would find the same
        "a file": ("error", 1, False),
        "invalid": ("error", 1, False),
        "also good": ("completed", 1, True),
    }
    assert requests == 2  # the others never reached the runtime
    assert got["missing"].error == {
        "type": "ValueError",
        "message": f"'cwd' {str(tmp_path / 'no-such-folder')!r} does not exist",
    }
    assert "is not a directory" in (got["a file"].error or {})["message"]
    row = got["missing"].to_json()
    assert row["retryable"] is False
    assert "retryable" not in got["good"].to_json()
    assert BatchResult.from_json(row) == got["missing"]


@requires_netns
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_without_credentials_the_cli_stops_at_the_first_task_in_one_line_writing_no_row(
    tmp_path: Path, anyio_backend: str
) -> None:
    # A new machine with no login: the bundled runtime and its default (OpenAI) provider, the
    # whole command in a network namespace of its own (nothing can leave the machine).
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        "[features]\nplugins = false\nremote_plugin = false\napps = false\n"
    )
    env = {**os.environ, **scripted_env(home)}
    tasks, output = _tasks_file(tmp_path, 40), tmp_path / "results.jsonl"
    unshare = shutil.which("unshare")
    assert unshare is not None
    with anyio.fail_after(120):
        code, lines, _stdout = await _run_cli(
            tasks, output, env, extra=("--attempts", "3"), wrapper=(unshare, "-rn")
        )
    assert code == 1, "\n".join(lines)
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    assert lines[-1] == (
        "batch: stopped: the Codex runtime has no credentials and its model provider needs "
        "them (every task would fail the same way): run `codex-anyio login` once on this "
        "machine, or try the batch offline first with --scripted; 0 of 40 done, run the same "
        "command again to continue"
    )
    assert not [line for line in lines if line.startswith("[")]  # no task made a row
    assert output.read_text() == ""  # so a re-run, logged in, runs all 40


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_cli_says_the_first_failure_of_each_kind_and_counts_causes_in_the_summary(
    tmp_path: Path, anyio_backend: str
) -> None:
    def script(request: RecordedRequest) -> Reply:
        prompt = prompt_of(request)
        if prompt == "fail":
            return failed("the model broke")
        return stall() if prompt == "stall" else message("ok")

    missing = {"prompt": "p", "cwd": str(tmp_path / "no-such-folder")}
    extra = {f"m{i}": missing for i in range(3)}
    extra |= {"f0": {"prompt": "fail"}, "f1": {"prompt": "fail"}, "s0": {"prompt": "stall"}}
    tasks, output = _tasks_file(tmp_path, 2, **extra), tmp_path / "results.jsonl"
    with anyio.fail_after(120):
        async with ScriptedModel(script) as model:
            env = await _scripted_env(tmp_path, model)
            code, lines, stdout = await _run_cli(
                tasks, output, env, extra=("--timeout", "1", "--attempts", "2")
            )
    assert code == 1, "\n".join(lines)
    firsts = [line for line in lines if line.startswith("batch: first ")]
    assert len(firsts) == 3, "\n".join(lines)  # one per kind, each with its message
    assert any(
        line.startswith("batch: first error: ValueError: 'cwd' ")
        and "does not exist (task m" in line
        for line in firsts
    ), firsts
    assert any("first failed: TurnFailedError: turn " in line for line in firsts), firsts
    assert any("the model broke (task f" in line for line in firsts), firsts
    assert any("first timeout: Timeout: the task took longer than 1.0 s" in line for line in firsts)
    causes = stdout.split("causes (the first message of each):\n", 1)[1].splitlines()
    assert causes[0].startswith("  3 error: ValueError: 'cwd' "), stdout
    assert causes[1].startswith("  2 failed: TurnFailedError: turn "), stdout
    assert causes[1].endswith(": the model broke"), stdout
    assert causes[2] == "  1 timeout: Timeout: the task took longer than 1.0 s", stdout
    rows = {row["id"]: row for row in _rows(output)}
    assert [rows[f"m{i}"]["attempt"] for i in range(3)] == [1, 1, 1]  # not retried
    assert rows["f0"]["attempt"] == 2  # a failed turn is


# -- running failed tasks again -----------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_retry_failed_runs_error_and_timeout_rows_again_appending_rows_that_then_count(
    tmp_path: Path, anyio_backend: str
) -> None:
    stalling = True

    def script(request: RecordedRequest) -> Reply:
        return stall() if stalling and prompt_of(request) == "slow" else message("ok")

    rejected = {"config": {"model_reasoning_effort": 5}}  # the runtime refuses it: an error row
    slow = {"prompt": "slow", "timeout": 0.5}
    tasks = _tasks_file(tmp_path, 2, bad=rejected, slow=slow)
    output = tmp_path / "results.jsonl"
    with anyio.fail_after(120):
        async with ScriptedModel(script) as model:
            env = await _scripted_env(tmp_path, model)
            code, lines, _ = await _run_cli(tasks, output, env)
            assert code == 1, "\n".join(lines)
            assert read_results(output)["slow"].status == "timeout"
            assert read_results(output)["bad"].status == "error"
            requests = len(model.requests)

            # A plain re-run counts them as done: nothing runs.
            code, lines, _ = await _run_cli(tasks, output, env)
            assert code == 1, "\n".join(lines)
            assert lines[0].startswith("batch: 4 tasks, 4 already done, 0 to run")
            assert len(model.requests) == requests

            # Only the statuses asked for; the model answers now.
            stalling = False
            code, lines, _ = await _run_cli(tasks, output, env, extra=("--retry", "timeout"))
            assert code == 1, "\n".join(lines)  # "bad" still has its error row
            assert lines[0].startswith("batch: 4 tasks, 3 already done, 1 to run (1 of them again)")
            assert read_results(output)["slow"].status == "completed"

            # The task is fixed in the tasks file; --retry-failed runs what did not complete.
            tasks = _tasks_file(tmp_path, 2, bad={}, slow=slow)
            code, lines, _ = await _run_cli(tasks, output, env, extra=("--retry-failed",))
            assert code == 0, "\n".join(lines)
            assert lines[0].startswith("batch: 4 tasks, 3 already done, 1 to run (1 of them again)")
    history: dict[str, list[str]] = {}  # append-only: every row of every run is still there
    for row in _rows(output):
        history.setdefault(row["id"], []).append(row["status"])
    assert history == {
        "t0": ["completed"],
        "t1": ["completed"],
        "bad": ["error", "completed"],
        "slow": ["timeout", "completed"],
    }
    assert {i: r.status for i, r in read_results(output).items()} == dict.fromkeys(
        history, "completed"
    )


def test_the_cli_refuses_a_retry_status_it_does_not_know_in_one_line(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(GOOD_TASKS)
    done = batch_cli(str(tasks), "-o", str(tmp_path / "r.jsonl"), "--retry", "error,broken")
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--retry: a comma-separated list of statuses" in done.stderr


# -- offline and attached: a harness tried end to end before any credentials exist -------------


def _no_codex_env(tmp_path: Path) -> dict[str, str]:
    """This environment without a runtime set-up: no CODEX_HOME, an empty HOME (no login,
    no config of the user's)."""
    env = {k: v for k, v in os.environ.items() if k != "CODEX_HOME"}
    (tmp_path / "empty-home").mkdir()
    return {**env, "HOME": str(tmp_path / "empty-home")}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_cli_runs_every_task_offline_with_scripted(
    tmp_path: Path, anyio_backend: str
) -> None:
    tasks, output = _tasks_file(tmp_path, 10), tmp_path / "results.jsonl"
    with anyio.fail_after(120):
        code, lines, stdout = await _run_cli(
            tasks, output, _no_codex_env(tmp_path), extra=("--scripted",)
        )
    assert code == 0, "\n".join(lines)
    rows = {row["id"]: row for row in _rows(output)}
    assert sorted(rows) == sorted(f"t{i}" for i in range(10))
    assert {row["status"] for row in rows.values()} == {"completed"}
    assert rows["t3"]["final_response"] == "echo: task 3"
    assert "completed               10" in stdout


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("listen", ["ws-token-file", "ws-token-env", "unix"])
async def test_the_cli_attaches_to_a_running_server_with_connect(
    tmp_path: Path, anyio_backend: str, listen: str
) -> None:
    tasks, output = _tasks_file(tmp_path, 4), tmp_path / "results.jsonl"
    env = _no_codex_env(tmp_path)
    with (
        anyio.fail_after(120),
        tempfile.TemporaryDirectory(prefix="batch-") as short,  # a unix socket path is short
    ):
        async with ScriptedModel(lambda r: message(f"served: {prompt_of(r)}")) as model:
            home = write_codex_home(tmp_path / "home", base_url=model.base_url)
            config = CodexConfig(cwd=tmp_path, env=scripted_env(home), codex_home=home)
            address = f"unix://{short}/app.sock" if listen == "unix" else "ws://127.0.0.1:0"
            async with serve_app_server(config, address) as server:
                extra = ["--connect", server.url]
                if listen == "ws-token-file":
                    extra += ["--token-file", str(server.token_file)]
                elif listen == "ws-token-env":
                    assert server.token_file is not None
                    env["BATCH_TOKEN"] = server.token_file.read_text().strip()
                    extra += ["--token-env", "BATCH_TOKEN"]
                code, lines, _ = await _run_cli(tasks, output, env, extra=tuple(extra))
            requests = len(model.requests)
    assert code == 0, "\n".join(lines)
    rows = {row["id"]: row for row in _rows(output)}
    assert {i: row["final_response"] for i, row in rows.items()} == {
        f"t{i}": f"served: task {i}" for i in range(4)
    }
    assert requests == 4  # every turn ran on the server attached to
