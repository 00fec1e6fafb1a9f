"""A sandbox per task in ``run_batch`` and ``codex-anyio batch``: command templates (in the
``bwrap``/``unshare`` sandboxes this machine can make), task lines naming their own, deadlines
and stop signals ending sandboxes, and the container command lines (docker/podman: run where
an engine works, skipped with the reason otherwise).

Each sandbox started here records its pid namespace (``readlink /proc/self/ns/pid``, run in
it) and the task id it was given; "nothing left" is that no process is in the namespace.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from codex_anyio import CodexConfig, StartupError, runtime_path
from codex_anyio.batch import BatchTask, TaskFileError, attempt_task, run_batch
from codex_anyio.batch._attempt import TaskDefaults
from codex_anyio.batch._sandbox import (
    CONTAINER_RUNTIME,
    SandboxSpec,
    check_template,
    container_argv,
    render_template,
)
from codex_anyio.testing import (
    RecordedRequest,
    Reply,
    ScriptedModel,
    message,
    open_scripted_pool,
    scripted_env,
    stall,
    write_codex_home,
)

from .test_batch import prompt_of
from .test_sandbox import any_sandbox, in_namespace, unshare_prefix, unusable

pytestmark = pytest.mark.anyio

RECORD = 'readlink /proc/self/ns/pid >> "$0"; printf "%s\\n" "$1" >> "$0.ids"; exec "$2" app-server'
"""What each test sandbox runs first: note its namespace and its task id, then the runtime."""


def recording(log: Path, prefix: list[str] | None = None) -> list[str]:
    """A sandbox template (as a list) that records into ``log`` and starts the runtime."""
    return [*(prefix or any_sandbox()), "sh", "-c", RECORD, os.fspath(log), "{id}", "{runtime}"]


def namespaces(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def recorded_ids(log: Path) -> list[str]:
    ids = Path(f"{log}.ids")
    return ids.read_text().splitlines() if ids.exists() else []


async def scripted_config(tmp_path: Path, model: ScriptedModel) -> CodexConfig:
    home = write_codex_home(tmp_path / "codex-home", base_url=model.base_url)
    (tmp_path / "home").mkdir(exist_ok=True)
    return CodexConfig(env=scripted_env(home, home=tmp_path / "home"), cwd=tmp_path)


def echo(request: RecordedRequest) -> Reply:
    prompt = prompt_of(request)
    return stall() if prompt == "slow" else message(f"re: {prompt}")


# -- templates and command lines ------------------------------------------------------------


def test_placeholders_are_filled_in_after_splitting_so_an_id_cannot_add_arguments() -> None:
    template = check_template(
        "wrap --name {id} --dir={cwd} -B {codex_home} -- {runtime} app-server"
    )
    evil = "x --privileged; rm -rf / $(touch owned) {cwd}"
    argv = render_template(template, task_id=evil, cwd="/work dir", codex_home="/h")
    assert argv == [
        "wrap",
        "--name",
        evil,
        "--dir=/work dir",
        "-B",
        "/h",
        "--",
        os.fspath(runtime_path()),
        "app-server",
    ]


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("wrap {image} codex", "unknown placeholder {image}"),
        ("wrap 'unclosed", "cannot be split"),
        ("wrap {id", "braces"),
        ("   ", "is empty"),
    ],
)
def test_a_template_that_is_not_valid_is_refused_where_it_is_given(
    template: str, says: str
) -> None:
    with pytest.raises(ValueError, match="sandbox") as caught:
        check_template(template)
    assert says in str(caught.value)


def test_a_task_container_is_started_exec_d_into_and_removed_with_these_command_lines() -> None:
    config = CodexConfig(env={"OPENAI_API_KEY": "secret", "RUST_LOG": "warn"}, codex_home="/h")
    spec = SandboxSpec(image="python:3.12", engine="podman", container_options=("--network=host",))
    run, exec_, remove = container_argv(spec, "codex-anyio-t1-ab12", config, cwd="/testbed")
    assert run == [
        "podman",
        "run",
        "-d",
        "--rm",
        "--init",
        "--name",
        "codex-anyio-t1-ab12",
        "-v",
        f"{runtime_path()}:{CONTAINER_RUNTIME}:ro",
        "-v",
        "/h:/h",
        "--network=host",
        "python:3.12",
        "sleep",
        "infinity",
    ]
    # Variables go by name (their values stay off every command line), then the runtime.
    assert exec_ == [
        "podman",
        "exec",
        "-i",
        "-e",
        "OPENAI_API_KEY",
        "-e",
        "RUST_LOG",
        "-e",
        "CODEX_HOME",
        "-w",
        "/testbed",
        "codex-anyio-t1-ab12",
        CONTAINER_RUNTIME,
        "app-server",
    ]
    assert "secret" not in " ".join(run + exec_)
    assert remove == ["podman", "rm", "-f", "codex-anyio-t1-ab12"]


def test_a_task_line_may_name_its_sandbox_or_its_container_but_not_both() -> None:
    task = BatchTask.from_json({"id": "a", "prompt": "p", "sandbox": "bwrap -- {runtime}"})
    assert task.sandbox == "bwrap -- {runtime}"
    assert BatchTask.from_json({"id": "b", "prompt": "p", "container": "img"}).container == "img"
    with pytest.raises(TaskFileError, match="'sandbox' and 'container'"):
        BatchTask.from_json({"id": "c", "prompt": "p", "sandbox": "x", "container": "img"})
    with pytest.raises(TaskFileError, match=r"task 'd': 'sandbox': unknown placeholder \{nope\}"):
        BatchTask.from_json({"id": "d", "prompt": "p", "sandbox": "x {nope}"})


def engine_unusable() -> str | None:
    for engine in ("docker", "podman"):
        if shutil.which(engine) is None:
            continue
        info = subprocess.run([engine, "info"], capture_output=True, text=True, check=False)
        if info.returncode == 0:
            return None
        return f"`{engine} info` failed: no container engine works here ({info.stderr.strip()})"
    return "neither docker nor podman is installed"


@pytest.mark.skipif(engine_unusable() is not None, reason=str(engine_unusable()))
async def test_a_batch_in_containers_runs_each_task_in_one_removed_afterwards(
    tmp_path: Path,
) -> None:
    engine = "docker" if shutil.which("docker") else "podman"
    with anyio.fail_after(300):
        async with ScriptedModel(echo) as model:
            config = await scripted_config(tmp_path, model)
            tasks = [BatchTask(id=f"t{i}", prompt=f"task {i}") for i in range(2)]
            async with run_batch(
                tasks,
                codex_config=config,
                container="debian:stable-slim",
                container_engine=engine,
                container_options=["--network=host"],
            ) as results:
                rows = [r async for r in results]
    assert {r.status for r in rows} == {"completed"}
    left = subprocess.run(  # noqa: ASYNC221 - after the batch, nothing else runs
        [engine, "ps", "-a", "--filter", "name=codex-anyio-t", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert left.stdout.strip() == ""


# -- run_batch in sandboxes -----------------------------------------------------------------------


async def test_each_task_runs_in_a_sandbox_of_its_own_that_is_empty_afterwards(
    tmp_path: Path,
) -> None:
    log = tmp_path / "sandboxes"
    tasks = [BatchTask(id=f"t{i}", prompt=f"task {i}") for i in range(3)]
    with anyio.fail_after(120):
        async with ScriptedModel(echo) as model:
            config = await scripted_config(tmp_path, model)
            async with run_batch(tasks, codex_config=config, sandbox=recording(log)) as results:
                rows = {r.id: r async for r in results}
    assert {r.status for r in rows.values()} == {"completed"}
    assert rows["t1"].final_response == "re: task 1"
    # (A runtime that lost the race to create the shared CODEX_HOME's state database at
    # start-up is started again, in a new sandbox: an id may be recorded twice.)
    assert set(recorded_ids(log)) == {"t0", "t1", "t2"}
    assert len(set(namespaces(log))) == len(namespaces(log)) >= 3
    assert all(in_namespace(ns) == [] for ns in namespaces(log))


async def test_a_task_deadline_interrupts_the_turn_then_ends_its_sandbox(tmp_path: Path) -> None:
    log = tmp_path / "sandboxes"
    tasks = [BatchTask(id="slow", prompt="slow", timeout=1.0)]
    with anyio.fail_after(120):
        async with ScriptedModel(echo) as model:
            config = await scripted_config(tmp_path, model)
            async with run_batch(tasks, codex_config=config, sandbox=recording(log)) as results:
                rows = [r async for r in results]
            # The runtime dropped the model's stream: the turn was interrupted, not cut off.
            await model.exchanges[0].abandoned.wait()
    assert rows[0].status == "timeout"
    assert all(in_namespace(ns) == [] for ns in namespaces(log))


async def test_a_task_line_names_its_own_sandbox_and_the_others_run_on_the_shared_pool(
    tmp_path: Path,
) -> None:
    log = tmp_path / "sandboxes"
    tasks = [
        BatchTask(id="boxed", prompt="in a box", sandbox=recording(log)),
        BatchTask(id="plain", prompt="on the pool"),
    ]
    with anyio.fail_after(120):
        async with ScriptedModel(echo) as model:
            config = await scripted_config(tmp_path, model)
            async with run_batch(tasks, servers=1, codex_config=config) as results:
                rows = {r.id: r async for r in results}
    assert {r.status for r in rows.values()} == {"completed"}
    assert set(recorded_ids(log)) == {"boxed"}


async def test_a_tasks_own_sandbox_that_cannot_start_is_its_error_row_and_the_batch_goes_on(
    tmp_path: Path,
) -> None:
    broken = [*any_sandbox(), "/no/such/codex", "app-server"]
    tasks = [
        BatchTask(id="broken", prompt="p", sandbox=broken),
        BatchTask(id="fine", prompt="p"),
    ]
    with anyio.fail_after(120):
        async with ScriptedModel(echo) as model:
            config = await scripted_config(tmp_path, model)
            async with run_batch(tasks, servers=1, codex_config=config) as results:
                rows = {r.id: r async for r in results}
    assert rows["fine"].status == "completed"
    assert rows["broken"].status == "error"
    assert rows["broken"].error is not None
    assert "/no/such/codex app-server` exited during start-up" in rows["broken"].error["message"]


async def test_a_task_whose_own_sandbox_template_is_not_valid_gets_a_final_error_row() -> None:
    tasks = [BatchTask(id="bad", prompt="p", sandbox="wrap {nope}")]
    with anyio.fail_after(60):
        async with run_batch(tasks, sandbox="never-started {runtime}") as results:
            rows = [r async for r in results]
    assert (rows[0].status, rows[0].retryable) == ("error", False)
    assert rows[0].error is not None
    assert "unknown placeholder {nope}" in rows[0].error["message"]


async def test_the_batchs_own_sandbox_that_cannot_start_ends_the_batch_naming_it(
    tmp_path: Path,
) -> None:
    tasks = [BatchTask(id=f"t{i}", prompt="p") for i in range(3)]
    broken = [*any_sandbox(), "/no/such/codex", "app-server"]
    with anyio.fail_after(120), pytest.raises(StartupError, match="/no/such/codex"):
        async with ScriptedModel(echo) as model:
            config = await scripted_config(tmp_path, model)
            async with run_batch(tasks, codex_config=config, sandbox=broken) as results:
                async for _ in results:
                    pass


async def test_an_executor_that_starts_no_sandbox_refuses_a_task_that_names_one(
    tmp_path: Path,
) -> None:
    task = BatchTask(id="boxed", prompt="p", sandbox=["bwrap", "--", "{runtime}"])
    with anyio.fail_after(60):
        async with open_scripted_pool([], servers=1, directory=tmp_path) as s:
            row = await attempt_task(s.pool, task, 1, TaskDefaults())
    assert (row.status, row.retryable) == ("error", False)
    assert row.error is not None
    assert "not run outside it" in row.error["message"]


def test_run_batch_refuses_a_sandbox_with_a_pool_of_the_callers_or_a_bad_template() -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        run_batch([], sandbox="wrap {nope}")
    with pytest.raises(ValueError, match="not both"):
        run_batch([], sandbox="wrap", container="img")
    with pytest.raises(ValueError, match="server to attach to"):
        run_batch([], sandbox="wrap", codex_config=CodexConfig(connect="ws://127.0.0.1:1"))


# -- the command line ------------------------------------------------------------------------------


async def _cli(
    tasks: Path, output: Path, env: dict[str, str], *args: str, stop_when: Any = None
) -> tuple[int, str]:
    """Run ``codex-anyio batch``; with ``stop_when``, SIGTERM it once ``stop_when()`` holds
    (checked at each progress line and every 0.1 s)."""
    argv = [sys.executable, "-m", "codex_anyio", "batch", str(tasks), "-o", str(output), *args]
    process = await anyio.open_process(argv, env=env)
    err = ""
    async with process:
        assert process.stderr is not None
        async with anyio.create_task_group() as tg:

            async def read() -> None:
                nonlocal err
                assert process.stderr is not None
                async for chunk in TextReceiveStream(process.stderr):
                    err += chunk

            tg.start_soon(read)
            if stop_when is not None:
                while not stop_when():  # noqa: ASYNC110 - another process's files
                    await anyio.sleep(0.1)
                process.send_signal(signal.SIGTERM)
            code = await process.wait()
    return code, err


def _tasks(tmp_path: Path, ids: list[str], prompt: str = "p") -> Path:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": i, "prompt": prompt}) + "\n" for i in ids))
    return tasks


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_cli_runs_each_task_in_its_sandbox_and_an_id_cannot_inject_arguments(
    tmp_path: Path, anyio_backend: str
) -> None:
    log = tmp_path / "sandboxes"
    evil = "x --share-net; touch INJECTED {cwd}"
    tasks, output = _tasks(tmp_path, ["t0", evil]), tmp_path / "results.jsonl"
    template = shlex.join(recording(log)[:-2]) + " {id} {runtime}"
    env = {**os.environ, "HOME": str(tmp_path)}
    with anyio.fail_after(120):
        code, err = await _cli(tasks, output, env, "--scripted", "--sandbox", template)
    assert code == 0, err
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert {row["status"] for row in rows} == {"completed"}
    assert set(recorded_ids(log)) == {"t0", evil}
    assert not (tmp_path / "INJECTED").exists()
    assert not (Path.cwd() / "INJECTED").exists()
    assert all(in_namespace(ns) == [] for ns in namespaces(log))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_sigterm_ends_every_sandbox_and_a_rerun_runs_the_rest(
    tmp_path: Path, anyio_backend: str
) -> None:
    log = tmp_path / "sandboxes"
    tasks, output = _tasks(tmp_path, ["a", "b", "c"], prompt="slow"), tmp_path / "results.jsonl"
    answering: list[bool] = []

    def script(request: RecordedRequest) -> Reply:
        return message("done") if answering else stall()

    template = shlex.join(recording(log)[:-2]) + " {id} {runtime}"
    with anyio.fail_after(120):
        async with ScriptedModel(script) as model:
            home = write_codex_home(tmp_path / "codex-home", base_url=model.base_url)
            env = {**os.environ, **scripted_env(home, home=tmp_path)}
            args = ("--sandbox", template, "--concurrency", "2")
            code, err = await _cli(
                tasks, output, env, *args, stop_when=lambda: len(model.exchanges) >= 2
            )
            assert code == 143, err
            first = namespaces(log)
            assert len(first) >= 2
            assert all(in_namespace(ns) == [] for ns in first)
            assert not output.exists() or output.read_text() == ""
            answering.append(True)
            code, err = await _cli(tasks, output, env, *args)
    assert code == 0, err
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == ["a", "b", "c"]
    assert {row["status"] for row in rows} == {"completed"}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_without_credentials_in_the_sandbox_the_cli_says_to_give_the_sandbox_a_login(
    tmp_path: Path, anyio_backend: str
) -> None:
    if unusable("unshare") is not None:
        pytest.skip(str(unusable("unshare")))
    # The default (OpenAI) provider and no login, in a sandbox with a network of its own.
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text("[features]\nplugins = false\nremote_plugin = false\n")
    offline = [*unshare_prefix()[:-1], "--net", "--", "{runtime}", "app-server"]
    tasks, output = _tasks(tmp_path, ["a", "b"]), tmp_path / "results.jsonl"
    env = {**os.environ, **scripted_env(home, home=tmp_path)}
    with anyio.fail_after(120):
        code, err = await _cli(tasks, output, env, "--sandbox", shlex.join(offline))
    assert code == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("batch: stopped: the Codex runtime in the sandbox has no credentials")
    assert "give the sandbox's runtime a login" in last


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--sandbox", "x", "--ray"], "not with --ray"),
        (["--sandbox", "x", "--connect", "ws://127.0.0.1:1"], "not with --connect"),
        (["--sandbox", "x {nope}"], "unknown placeholder {nope}"),
        (["--sandbox", "x", "--container", "img"], "not allowed with argument"),
        (["--container-option=--network=host"], "--container-option goes with --container"),
    ],
)
def test_the_cli_refuses_a_sandbox_it_cannot_use_in_one_line_with_status_2(
    tmp_path: Path, args: list[str], says: str
) -> None:
    tasks = _tasks(tmp_path, ["a"])
    argv = [sys.executable, "-m", "codex_anyio", "batch", str(tasks), "-o", str(tmp_path / "o")]
    done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
