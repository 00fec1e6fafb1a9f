"""The batch through a model gateway: ``--gateway``, ``--record`` and ``--trajectories`` (and
``run_batch(gateway=, record=, trajectories=)``), against the real runtime.

Each task's cassette must replay (the task run again from it alone gives the same answer),
each trajectory must be one Harbor accepts, and a resumed run must neither lose nor
duplicate one: a task's files always describe the attempt its result row describes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_anyio import CodexConfig, ModelGateway
from codex_anyio.batch import BatchTask, file_stem, run_batch
from codex_anyio.gateway import read_cassette
from codex_anyio.testing import RecordedRequest, Reply, ScriptedModel, message, stall
from codex_anyio.testing._echo import echo_runtime

from .test_batch import _no_codex_env, _rows, _run_cli, _scripted_env, batch_cli, prompt_of
from .test_trajectory import harbor_problems

pytestmark = pytest.mark.anyio

# Ids that are not plain file names: each must get a file of its own, inside the folder.
ODD_IDS = ["a/b", "../up", ".hidden", "x y", "t1.json", "ünï", "~t~", "a" * 300]


def _tasks(tmp_path: Path, count: int) -> Path:
    ids = [f"t{i}" for i in range(count - len(ODD_IDS))] + ODD_IDS
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": i, "prompt": f"task {i[:20]}"}) + "\n" for i in ids))
    return tasks


def _records(folder: Path, suffix: str) -> dict[str, Path]:
    return {path.name[: -len(suffix)]: path for path in folder.iterdir()}


def _check_records(output: Path, cassettes: Path, trajectories: Path) -> dict[str, Any]:
    """Every row's task has exactly one cassette and one trajectory, of the row's own thread
    and turn, the cassette readable and the trajectory valid; nothing else is in the
    folders."""
    rows = {row["id"]: row for row in _rows(output)}  # the last row of an id counts
    assert sorted(_records(cassettes, ".jsonl")) == sorted(file_stem(i) for i in rows)
    assert sorted(_records(trajectories, ".trajectory.json")) == sorted(file_stem(i) for i in rows)
    for task_id, row in rows.items():
        calls = read_cassette(cassettes / f"{file_stem(task_id)}.jsonl")
        assert {(c.thread_id, c.turn_id) for c in calls} == {(row["thread_id"], row["turn_id"])}
        document = json.loads((trajectories / f"{file_stem(task_id)}.trajectory.json").read_text())
        assert harbor_problems(document) == [], task_id
        assert document["session_id"] == row["thread_id"]
        assert document["steps"][-1]["message"] == row["final_response"]
    return rows


async def _replay(cassette: Path, task: BatchTask) -> str | None:
    """Run ``task`` again with the runtime set up as ``batch --scripted`` does, answered from
    ``cassette`` alone (the echoing model is not reached: its gateway is not the runtime's)."""
    replay = ModelGateway(cassette=cassette, request_max_retries=0, stream_max_retries=0)
    async with echo_runtime(CodexConfig()) as echo:
        async with run_batch([task], servers=1, codex_config=echo.config, gateway=replay) as rs:
            (result,) = [r async for r in rs]
    assert result.status == "completed", result.error
    assert len(replay.exchanges()) == 1
    return result.final_response


def _leftovers(folder: Path) -> list[Path]:
    """Temporary files of the atomic writes left behind (none, once a run is over)."""
    return list(folder.glob("**/*.tmp"))


def test_task_ids_become_distinct_file_names_inside_the_folder() -> None:
    stems = [file_stem(i) for i in ["t0", *ODD_IDS, "a" * 301]]
    assert len(set(stems)) == len(stems)
    assert stems[:3] == ["t0", "a%2Fb", "%2E%2E%2Fup"]
    assert all("/" not in s and not s.startswith(".") and len(s) <= 120 for s in stems)


async def test_batch_scripted_records_a_replayable_cassette_and_a_valid_trajectory_per_task(
    tmp_path: Path, anyio_backend: str
) -> None:
    tasks, output = _tasks(tmp_path, 20), tmp_path / "results.jsonl"
    cassettes, trajectories = tmp_path / "cassettes", tmp_path / "out" / "trajectories"
    extra = ("--scripted", "--record", str(cassettes), "--trajectories", str(trajectories))
    with anyio.fail_after(240):
        code, lines, _ = await _run_cli(
            tasks, output, _no_codex_env(tmp_path), backend=anyio_backend, extra=extra
        )
        assert code == 0, "\n".join(lines)
        rows = _check_records(output, cassettes, trajectories)
        assert len(rows) == 20
        for task_id in ("t0", "a/b", "a" * 300):
            prompt = f"task {task_id[:20]}"
            assert rows[task_id]["final_response"] == f"echo: {prompt}"
            replayed = await _replay(
                cassettes / f"{file_stem(task_id)}.jsonl", BatchTask(id=task_id, prompt=prompt)
            )
            assert replayed == rows[task_id]["final_response"]
    assert _leftovers(tmp_path) == []


async def test_a_resumed_batch_neither_loses_nor_duplicates_a_tasks_records(
    tmp_path: Path, anyio_backend: str
) -> None:
    tasks, output = _tasks(tmp_path, 20), tmp_path / "results.jsonl"
    cassettes, trajectories = tmp_path / "cassettes", tmp_path / "trajectories"
    extra = ("--scripted", "--record", str(cassettes), "--trajectories", str(trajectories))
    env = _no_codex_env(tmp_path)
    every = tasks.read_text().splitlines(keepends=True)
    with anyio.fail_after(240):
        tasks.write_text("".join(every[:12]))
        code, lines, _ = await _run_cli(tasks, output, env, backend=anyio_backend, extra=extra)
        assert code == 0, "\n".join(lines)
        # A run stopped after writing two tasks' files but before their rows: those two run
        # again (new threads), and their files are replaced, not added to.
        rows = output.read_text().splitlines(keepends=True)
        output.write_text("".join(rows[:-2]))
        kept = {json.loads(row)["id"] for row in rows[:-2]}
        before = {i: (cassettes / f"{file_stem(i)}.jsonl").read_bytes() for i in kept}
        tasks.write_text("".join(every))
        code, lines, _ = await _run_cli(tasks, output, env, backend=anyio_backend, extra=extra)
        assert code == 0, "\n".join(lines)
        assert lines[0].startswith("batch: 20 tasks, 10 already done")
    rows = _check_records(output, cassettes, trajectories)
    assert len(rows) == 20
    assert len(_rows(output)) == 20  # each task once
    assert {i: (cassettes / f"{file_stem(i)}.jsonl").read_bytes() for i in kept} == before


async def test_batch_gateway_routes_every_call_through_one_gateway_to_a_loopback_upstream(
    tmp_path: Path, anyio_backend: str
) -> None:
    tasks, output = _tasks(tmp_path, 10), tmp_path / "results.jsonl"
    cassettes = tmp_path / "cassettes"

    def upstream(request: RecordedRequest) -> Reply:
        return message(f"upstream: {prompt_of(request)}")

    with anyio.fail_after(120):
        async with ScriptedModel(upstream) as model:
            # The runtimes' own configuration points elsewhere: only --gateway reaches it.
            env = await _scripted_env(tmp_path, model)
            env["CODEX_HOME"] = str(_unreachable_home(tmp_path))
            env["BATCH_KEY"] = "sk-batch-secret-key-0123456789"
            extra = ("--gateway", model.base_url, "--gateway-key-env", "BATCH_KEY")
            extra += ("--record", str(cassettes))
            code, lines, _ = await _run_cli(tasks, output, env, backend=anyio_backend, extra=extra)
            seen = model.requests
    assert code == 0, "\n".join(lines)
    rows = {row["id"]: row for row in _rows(output)}
    assert {row["final_response"] for row in rows.values()} == {
        f"upstream: task {i[:20]}" for i in rows
    }
    assert len(seen) == len(rows) == 10
    # The runtime's key reached the upstream through the gateway, and no cassette holds it.
    assert {r.headers.get("authorization") for r in seen} == {
        "Bearer sk-batch-secret-key-0123456789"
    }
    for task_id, row in rows.items():
        path = cassettes / f"{file_stem(task_id)}.jsonl"
        assert "sk-batch-secret" not in path.read_text()
        (call,) = read_cassette(path)
        assert (call.thread_id, call.turn_id, call.status) == (
            row["thread_id"],
            row["turn_id"],
            200,
        )


def _unreachable_home(tmp_path: Path) -> Path:
    from codex_anyio.testing import write_codex_home

    return write_codex_home(tmp_path / "unreachable-home", base_url="http://127.0.0.1:9/v1")


async def test_run_batch_records_a_timed_out_tasks_abandoned_call(tmp_path: Path) -> None:
    """The library API: a task whose deadline interrupts its turn still gets its files (the
    call the runtime dropped, recorded as abandoned)."""

    def script(request: RecordedRequest) -> Reply:
        return stall(message("thinking")) if "slow" in prompt_of(request) else message("ok")

    cassettes, trajectories = tmp_path / "c", tmp_path / "t"
    tasks = [BatchTask(id="fast", prompt="fast"), BatchTask(id="slow", prompt="slow", timeout=1)]
    with anyio.fail_after(90):
        async with ScriptedModel(script) as model, echo_runtime(CodexConfig()) as echo:
            gateway = ModelGateway(upstream=model.base_url, stream_max_retries=0)
            run = run_batch(
                tasks,
                servers=1,
                codex_config=echo.config,
                gateway=gateway,
                record=cassettes,
                trajectories=trajectories,
            )
            async with run as results:
                statuses = {r.id: r.status async for r in results}
    assert statuses == {"fast": "completed", "slow": "timeout"}
    (slow,) = read_cassette(cassettes / "slow.jsonl")
    assert slow.abandoned
    document = json.loads((trajectories / "slow.trajectory.json").read_text())
    assert harbor_problems(document) == []
    assert document["steps"][1]["extra"]["abandoned"] is True


def test_run_batch_refuses_records_without_a_gateway_and_a_gateway_beside_a_pool(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="give the batch gateway="):
        run_batch([], record=tmp_path)
    with pytest.raises(ValueError, match="a pool of yours uses its own gateway"):
        run_batch([], pool=object(), gateway=ModelGateway(upstream="http://127.0.0.1:9/v1"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(["--record", "{tmp}/c"], "add --gateway URL (or --scripted)", id="record"),
        pytest.param(
            ["--trajectories", "{tmp}/t"], "--trajectories write the model calls", id="traj"
        ),
        pytest.param(
            ["--gateway", "ftp://h/v1"],
            "--gateway: upstream must be an http:// or https:// URL",
            id="ftp",
        ),
        pytest.param(["--gateway-key-env", "K"], "goes with --gateway", id="key-no-gateway"),
        pytest.param(
            ["--gateway", "http://127.0.0.1:9/v1", "--ray"], "not with --ray", id="gateway-ray"
        ),
        pytest.param(
            ["--gateway", "http://127.0.0.1:9/v1", "--scripted"],
            "not allowed with argument --gateway",
            id="gateway-scripted",
        ),
        pytest.param(
            ["--gateway", "http://127.0.0.1:9/v1", "--connect", "ws://127.0.0.1:9"],
            "not allowed with argument --gateway",
            id="gateway-connect",
        ),
    ],
)
def test_the_cli_refuses_bad_gateway_arguments_in_one_line_with_status_2(
    tmp_path: Path, args: list[str], says: str
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"id": "t0", "prompt": "p"}) + "\n")
    out = tmp_path / "results.jsonl"
    done = batch_cli(str(tasks), "-o", str(out), *(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert says in done.stderr
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["tasks.jsonl"]


async def test_a_task_whose_first_calls_the_gateway_forgot_is_recorded_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from codex_anyio.gateway import ModelRequest, function_call_events, message_events, response

    async def tool_then_message(request: ModelRequest) -> Any:
        if request.function_call_outputs():
            return response(message_events("done"))
        return response(function_call_events("no_such_tool", {}, call_id="call-1"))

    gateway = ModelGateway(
        tool_then_message, keep_exchanges=1, request_max_retries=0, stream_max_retries=0
    )
    with anyio.fail_after(60):
        async with echo_runtime(CodexConfig()) as echo:
            run = run_batch(
                [BatchTask(id="t", prompt="p")],
                servers=1,
                codex_config=echo.config,
                gateway=gateway,
                record=tmp_path,
            )
            async with run as results:
                (result,) = [r async for r in results]
    assert result.final_response == "done"
    (kept,) = read_cassette(tmp_path / "t.jsonl")
    assert kept.index == 1
    assert "forgot the first 1 model calls" in caplog.text
