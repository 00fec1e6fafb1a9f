"""The batch runner: the Python API against the real runtime, the results file, and the
``codex-anyio batch`` command (progress in a non-TTY, Ctrl-C then resume)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from codex_anyio import ClusterError
from codex_anyio.batch import (
    BatchResult,
    BatchTask,
    ResultWriter,
    parse_shard,
    read_results,
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


def test_the_results_file_survives_a_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    with ResultWriter(path) as writer:
        writer.write(BatchResult(id="1", status="completed", final_response="ok"))
        writer.write(BatchResult(id="2", status="failed", error={"type": "X", "message": "m"}))
    with open(path, "a", encoding="utf-8") as file:
        file.write('{"id": "3", "status": "comp')  # killed mid-write
    assert sorted(read_results(path)) == ["1", "2"]
    with ResultWriter(path) as writer:  # repairs, then appends on a line of its own
        writer.write(BatchResult(id="3", status="completed"))
    assert sorted(read_results(path)) == ["1", "2", "3"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_tasks_file_takes_prompt_or_input_and_rejects_repeated_ids(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        '{"id": 1, "prompt": "a", "timeout": 5}\n\n'
        '{"id": "2", "input": [{"type": "text", "text": "b"}], "approval": "accept"}\n'
    )
    tasks = read_tasks(path)
    assert [(t.id, t.timeout, t.approval) for t in tasks] == [
        ("1", 5.0, None),
        ("2", None, "accept"),
    ]
    path.write_text('{"id": "1", "prompt": "a"}\n{"id": "1", "prompt": "b"}\n')
    with pytest.raises(ValueError, match="appears twice"):
        read_tasks(path)


async def _run_cli(
    tasks: Path,
    output: Path,
    env: dict[str, str],
    *,
    interrupt_after: int | None,
    backend: str,
    extra: tuple[str, ...] = (),
) -> tuple[int, list[str], str]:
    """Run ``codex-anyio batch`` (plain progress: its stderr is a pipe); with
    ``interrupt_after``, send SIGINT once that many results have been reported."""
    argv = [sys.executable, "-m", "codex_anyio", "batch", str(tasks), "-o", str(output)]
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
