"""The batch runner: the Python API against the real runtime, the results file, and the
``codex-anyio batch`` command (progress in a non-TTY, Ctrl-C then resume)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from codex_anyio import ClusterError, UsageLimitError
from codex_anyio.batch import (
    BatchResult,
    BatchTask,
    parse_shard,
    read_tasks,
    run_batch,
    run_batch_on_ray,
    shard_of,
)
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


async def test_a_usage_limit_stops_the_batch_with_no_row_and_no_retry_for_the_rest(
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
        async with open_scripted_pool(script, directory=tmp_path) as s:
            with pytest.raises(UsageLimitError) as caught:
                async with run_batch(tasks, pool=s.pool, concurrency=1, attempts=3) as results:
                    async for result in results:
                        got.append(result)
            requests = len(s.model.requests)
    assert [r.status for r in got] == ["completed", "completed"]  # no row for the other 8
    assert requests == 3  # the limit is not retried
    assert caught.value.resets_at == resets
    # The Ray executor gets it back from an actor's process: it must survive pickling.
    copy = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(copy, UsageLimitError)
    assert (copy.resets_at, str(copy)) == (resets, str(caught.value))


async def _run_cli(
    tasks: Path,
    output: Path,
    env: dict[str, str],
    *,
    interrupt_after: int | None = None,
    backend: str = "asyncio",
    extra: tuple[str, ...] = (),
    python: tuple[str, ...] = ("-m", "codex_anyio"),
) -> tuple[int, list[str], str]:
    """Run ``codex-anyio batch`` (plain progress: its stderr is a pipe); with
    ``interrupt_after``, send SIGINT once that many results have been reported. ``python``:
    what the interpreter runs instead of the installed command (code that injects a fault)."""
    argv = [sys.executable, *python, "batch", str(tasks), "-o", str(output)]
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
                process.send_signal(signal.SIGINT)
                interrupt_after = None
        stdout = "".join([chunk async for chunk in TextReceiveStream(process.stdout)])
        code = await process.wait()
    return code, lines, stdout


async def test_the_cli_resumes_after_ctrl_c_without_repeating_or_losing_a_task(
    tmp_path: Path, anyio_backend: str
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
                tasks, output, env, interrupt_after=2, backend=anyio_backend
            )
            assert code == 130, "\n".join(lines)
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

    from codex_anyio._batch_cli import _print_summary, _RichProgress, _Tally

    tally = _Tally(total=3, skipped=1)
    run = run_batch([], concurrency=2)
    out = io.StringIO()
    with _RichProgress(tally, run, out) as progress:
        for i, status in enumerate(["completed", "timeout"]):
            result = BatchResult(
                id=str(i),
                status=status,
                duration_ms=1000 * (i + 1),
                usage={"total": {"totalTokens": 15}},
            )
            tally.add(result)
            progress.update(result)
    assert "3/3" in out.getvalue()
    assert "30 tokens" in out.getvalue()
    summary = io.StringIO()
    _print_summary(tally, True, summary)
    text = summary.getvalue()
    assert "batch summary" in text
    assert "timeout" in text
    assert "duration p95" in text


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
        "import sys, codex_anyio, codex_anyio.batch, codex_anyio._batch_cli\n"
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
