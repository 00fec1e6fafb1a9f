"""The batch runner on Ray: real actors, real runtimes, the scripted model on loopback.

These start Ray, whose processes probe cloud metadata addresses and DNS at start-up. They run
only inside a network namespace that has nothing but loopback (``scripts/loopback-netns``,
used by ``nox -s ray``), and skip themselves anywhere else, before Ray is even imported.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from codex_anyio import CodexConfig, CredentialsMissingError, StartupError
from codex_anyio.batch import (
    ActorStatistics,
    BatchResult,
    BatchTask,
    RayBatchRun,
    run_batch_on_ray,
)
from codex_anyio.testing import (
    RecordedRequest,
    Reply,
    ScriptedModel,
    message,
    scripted_env,
    stall,
    usage_limit_reached,
    write_codex_home,
)


def _only_loopback() -> bool:
    # Not /sys/class/net: sysfs shows the namespace it was mounted in, not ours.
    return [name for _, name in socket.if_nameindex()] == ["lo"]


if not _only_loopback():
    pytest.skip(
        "Ray tests run only in a loopback-only network namespace: scripts/loopback-netns "
        "(nox -s ray); Ray probes the network at start-up",
        allow_module_level=True,
    )

ray = pytest.importorskip("ray")

pytestmark = [
    pytest.mark.anyio,
    # Ray's own imports and threads warn about things that are not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

MARKER = "CODEX_ANYIO_RAY_TEST"
"""Set in the environment Ray is started with: every Ray process and app-server of these
tests inherits it, so a /proc scan finds exactly ours (other runs share the machine)."""


PROGRESS = re.compile(r"\[\d+/\d+\] ")


def prompt_of(request: RecordedRequest) -> str:
    texts = [
        part.get("text", "")
        for item in request.body.get("input", [])
        if item.get("role") == "user"
        for part in item.get("content", [])
    ]
    return texts[-1] if texts else ""


def processes_with(variable: str, value: str) -> dict[int, str]:
    """Living processes whose environment has ``variable=value``: pid -> command name."""
    needle = f"{variable}={value}".encode()
    found: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes()
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        if needle in environ.split(b"\0") and stat.rpartition(")")[2].split()[0] != "Z":
            found[int(name)] = stat[stat.index("(") + 1 : stat.rindex(")")]
    return found


def app_servers(found: dict[int, str]) -> dict[int, str]:
    return {pid: name for pid, name in found.items() if name.startswith("codex")}


async def until_gone(variable: str, value: str, which: str = "app-servers") -> dict[int, str]:
    """What is left after giving exiting processes a few seconds (they are not our
    children: there is nothing to wait on but /proc)."""
    left: dict[int, str] = {}
    with anyio.move_on_after(15):
        while True:
            left = processes_with(variable, value)
            if which == "app-servers":
                left = app_servers(left)
            if not left:
                break
            await anyio.sleep(0.1)
    return left


async def signal_the_actor_running(
    run: RayBatchRun, task_id: str, arrived: anyio.Event, signum: int
) -> tuple[list[BatchResult], ActorStatistics]:
    """Run ``run`` to the end, sending ``signum`` to the worker of the actor running
    ``task_id`` once ``arrived`` is set; returns every result and that actor."""
    got: list[BatchResult] = []
    async with run as results, anyio.create_task_group() as tg:

        async def collect() -> None:
            got.extend([r async for r in results])

        tg.start_soon(collect)
        await arrived.wait()
        (victim,) = [s for s in await run.statistics() if task_id in s.running]
        os.kill(victim.pid, signum)
    return got, victim


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """One local Ray for the module (start-up takes seconds); shut down at the end (never
    ``ray stop``: that would stop every Ray on the machine)."""
    run = uuid.uuid4().hex
    os.environ[MARKER] = run
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        resources={"codex_slots": 3},  # how a node says how many tasks it takes
    )
    try:
        yield run
    finally:
        ray.shutdown()
        del os.environ[MARKER]


def codex_config(tmp_path: Path, model: ScriptedModel) -> CodexConfig:
    home = write_codex_home(tmp_path / "codex-home", base_url=model.base_url)
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    return CodexConfig(cwd=workspace, env=scripted_env(home), codex_home=home)


async def test_sixteen_tasks_over_two_actors_each_give_one_row_and_a_deadline_interrupts(
    tmp_path: Path, ray_cluster: str, anyio_backend: str
) -> None:
    def script(request: RecordedRequest) -> Reply:
        prompt = prompt_of(request)
        return stall() if prompt == "slow" else message(f"re: {prompt}")

    tasks = [BatchTask(id=f"t{i}", prompt=f"task {i}") for i in range(15)]
    tasks.append(BatchTask(id="slow", prompt="slow", timeout=1.0))
    with anyio.fail_after(120):
        async with ScriptedModel(script) as model:
            run = run_batch_on_ray(
                tasks,
                actors=2,
                slots=4,
                servers=2,
                timeout=60,
                codex_config=codex_config(tmp_path, model),
            )
            async with run as results:
                stats = await run.statistics()
                # The scan below sees the actors' runtimes while they run (2 actors x 2).
                assert len(app_servers(processes_with(MARKER, ray_cluster))) == 4
                got = [r async for r in results]
            # The runtime dropped the model's stream: the turn was interrupted on the server.
            for slow in (e for e in model.exchanges if prompt_of(e.request) == "slow"):
                await slow.abandoned.wait()
    assert [s.slots for s in stats] == [4, 4]
    assert len({s.pid for s in stats}) == 2
    assert sorted(r.id for r in got) == sorted(t.id for t in tasks)  # each once
    by_id = {r.id: r for r in got}
    assert by_id["slow"].status == "timeout"
    assert by_id["slow"].error is not None
    assert by_id["slow"].error["type"] == "Timeout"
    assert {by_id[f"t{i}"].status for i in range(15)} == {"completed"}
    assert by_id["t3"].final_response == "re: task 3"
    assert {r.attempt for r in got} == {1}
    assert not app_servers(processes_with(MARKER, ray_cluster))  # the pools closed


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_usage_limit_holds_the_task_and_its_actor_until_the_reset_and_none_fails(
    tmp_path: Path, ray_cluster: str, anyio_backend: str
) -> None:
    # One actor, one account: the limit pauses every account of the actor; it hands the task
    # back, and the driver gives it nothing until the reset, then everything completes.
    # The wait outlasts a task's deadline and the driver's watchdog (2 + 0.5 s): an actor
    # that waited for the reset itself would have the call cancelled as hung.
    resets = datetime.fromtimestamp(int(time.time()) + 5, timezone.utc)
    seen: list[tuple[str, float]] = []

    def script(request: RecordedRequest) -> Reply:
        prompt = prompt_of(request)
        seen.append((prompt, time.time()))
        if prompt == "task 2" and len(seen) == 3:
            return usage_limit_reached(resets)
        return message(f"re: {prompt}")

    tasks = [BatchTask(id=f"t{i}", prompt=f"task {i}") for i in range(5)]
    with anyio.fail_after(120):
        async with ScriptedModel(script) as model:
            config = codex_config(tmp_path, model)
            run = run_batch_on_ray(
                tasks,
                actors=1,
                slots=1,
                servers=1,
                timeout=2,
                watchdog_grace=0.5,
                codex_config=config,
            )
            async with run as results:
                got = [r async for r in results]
    assert [r.id for r in got] == [f"t{i}" for i in range(5)]
    assert {(r.status, r.attempt) for r in got} == {("completed", 1)}  # no attempt used
    assert got[2].final_response == "re: task 2"  # it ran again after the reset
    assert [prompt for prompt, _ in seen] == [f"task {i}" for i in (0, 1, 2, 2, 3, 4)]
    # Nothing reached the paused account before its reset.
    assert min(at for _, at in seen[3:]) >= resets.timestamp()


async def test_by_default_a_node_with_codex_slots_gets_one_actor_with_that_many_slots(
    tmp_path: Path, ray_cluster: str, anyio_backend: str
) -> None:
    tasks = [BatchTask(id=f"t{i}", prompt=f"task {i}") for i in range(6)]
    with anyio.fail_after(120):
        async with ScriptedModel(lambda request: message("ok")) as model:
            run = run_batch_on_ray(tasks, servers=1, codex_config=codex_config(tmp_path, model))
            async with run as results:
                stats = await run.statistics()
                got = [r async for r in results]
    assert [(s.slots, s.node_id) for s in stats] == [(3, ray.get_runtime_context().get_node_id())]
    assert run.concurrency == 3
    assert sorted(r.id for r in got) == sorted(t.id for t in tasks)
    assert {r.status for r in got} == {"completed"}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_actor_killed_mid_task_is_restarted_and_the_task_rerun_as_attempt_two(
    tmp_path: Path, ray_cluster: str, anyio_backend: str
) -> None:
    doomed_arrived = anyio.Event()

    def script(request: RecordedRequest) -> Reply:
        prompt = prompt_of(request)
        if prompt == "doomed" and not doomed_arrived.is_set():
            doomed_arrived.set()
            return stall()
        return message(f"re: {prompt}")

    tasks = [BatchTask(id=f"t{i}", prompt=f"task {i}") for i in range(5)]
    tasks.insert(2, BatchTask(id="doomed", prompt="doomed"))
    with anyio.fail_after(120):
        async with ScriptedModel(script) as model:
            run = run_batch_on_ray(
                tasks, actors=2, slots=2, servers=1, attempts=2,
                codex_config=codex_config(tmp_path, model),
            )  # fmt: skip
            # SIGKILL: as abrupt as os._exit in the actor
            got, _ = await signal_the_actor_running(run, "doomed", doomed_arrived, signal.SIGKILL)
    by_id = {r.id: r for r in got}
    assert sorted(by_id) == sorted(t.id for t in tasks)
    assert len(got) == len(tasks)
    assert by_id["doomed"].status == "completed", by_id["doomed"]
    assert by_id["doomed"].attempt == 2
    assert by_id["doomed"].final_response == "re: doomed"
    assert await until_gone(MARKER, ray_cluster) == {}  # the dead actor's runtime went too


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_drivers_watchdog_cancels_a_call_past_its_deadline_and_the_turn_ends(
    tmp_path: Path, ray_cluster: str, anyio_backend: str
) -> None:
    def script(request: RecordedRequest) -> Reply:
        return stall() if prompt_of(request) == "slow" else message("quick")

    # The actor's own deadline (60 s) is far off; a negative grace brings the driver's
    # watchdog (deadline + grace) to 1 s: it must cancel the call through Ray.
    tasks = [BatchTask(id="slow", prompt="slow"), BatchTask(id="fast", prompt="fast")]
    with anyio.fail_after(120):
        async with ScriptedModel(script) as model:
            run = run_batch_on_ray(
                tasks, actors=1, slots=2, servers=1, timeout=60, watchdog_grace=-59,
                codex_config=codex_config(tmp_path, model),
            )  # fmt: skip
            async with run as results:
                got = {r.id: r async for r in results}
            for slow in (e for e in model.exchanges if prompt_of(e.request) == "slow"):
                await slow.abandoned.wait()  # the turn was interrupted on the server
    assert got["slow"].status == "timeout"
    assert got["slow"].error is not None
    assert "driver cancelled it" in got["slow"].error["message"]
    assert got["fast"].status == "completed"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_actor_that_cannot_take_the_cancellation_is_killed_and_restarted(
    tmp_path: Path, ray_cluster: str, anyio_backend: str
) -> None:
    slow_arrived = anyio.Event()

    def script(request: RecordedRequest) -> Reply:
        if prompt_of(request) == "slow":
            slow_arrived.set()
            return stall()
        return message("quick")

    # The watchdog fires at 1 s (see above); the actor's worker is stopped (SIGSTOP), so
    # ``ray.cancel`` cannot reach the call: KILL_AFTER later the driver kills the actor.
    tasks = [BatchTask(id="slow", prompt="slow")]
    with anyio.fail_after(120):
        async with ScriptedModel(script) as model:
            run = run_batch_on_ray(
                tasks, actors=1, slots=1, servers=1, timeout=60, watchdog_grace=-59,
                codex_config=codex_config(tmp_path, model),
            )  # fmt: skip
            got, stuck = await signal_the_actor_running(run, "slow", slow_arrived, signal.SIGSTOP)
            for slow in model.exchanges:
                await slow.abandoned.wait()  # its runtime died with the killed actor
    (result,) = got
    assert result.status == "timeout"
    assert result.error is not None
    assert "driver cancelled it" in result.error["message"]
    assert stuck.pid not in processes_with(MARKER, ray_cluster)  # killed, not left stopped
    assert await until_gone(MARKER, ray_cluster) == {}  # and its app-server went too


async def _run_to_the_end(run: RayBatchRun, got: list[BatchResult]) -> None:
    async with run as results:
        got.extend([r async for r in results])


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_actor_whose_runtime_cannot_start_ends_the_run_with_its_reason_and_no_row(
    tmp_path: Path, ray_cluster: str, anyio_backend: str
) -> None:
    tasks = [BatchTask(id=f"t{i}", prompt="p") for i in range(4)]
    got: list[BatchResult] = []
    with anyio.fail_after(120):
        async with ScriptedModel(lambda request: message("ok")) as model:
            home = write_codex_home(
                tmp_path / "codex-home", base_url=model.base_url, approval_policy="untrusted"
            )
            config = CodexConfig(cwd=tmp_path, env=scripted_env(home), codex_home=home)
            run = run_batch_on_ray(tasks, actors=1, slots=2, servers=1, codex_config=config)
            with pytest.raises(StartupError) as caught:
                await _run_to_the_end(run, got)
    assert type(caught.value) is StartupError  # the runtime's own error, not Ray's wrapper
    assert "untrusted" in str(caught.value)
    assert got == []  # a row each would be a final error that a re-run skips
    assert await until_gone(MARKER, ray_cluster) == {}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_without_credentials_on_the_actors_the_run_ends_at_the_first_task_with_no_row(
    tmp_path: Path, ray_cluster: str, anyio_backend: str
) -> None:
    # The bundled runtime with its default (OpenAI) provider and no login; the namespace
    # has only loopback, so nothing it tries can leave the machine.
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        "[features]\nplugins = false\nremote_plugin = false\napps = false\n"
    )
    config = CodexConfig(cwd=tmp_path, env=scripted_env(home), codex_home=home)
    tasks = [BatchTask(id=f"t{i}", prompt="p") for i in range(6)]
    got: list[BatchResult] = []
    with anyio.fail_after(120):
        run = run_batch_on_ray(tasks, actors=1, slots=2, servers=1, attempts=3, codex_config=config)
        with pytest.raises(CredentialsMissingError, match="no credentials"):
            await _run_to_the_end(run, got)
    assert got == []  # not six error rows, each tried three times
    assert await until_gone(MARKER, ray_cluster) == {}


async def _run_cli(
    tasks: Path, output: Path, env: dict[str, str], *, interrupt_after: int | None
) -> tuple[int, list[str], set[str]]:
    """``codex-anyio batch --ray local`` as its own driver (its own Ray, started and shut
    down by it); with ``interrupt_after``, SIGINT once that many results were reported. Also
    returns the names of the processes carrying the driver's marker just before the SIGINT."""
    argv = [sys.executable, "-m", "codex_anyio", "batch", str(tasks), "-o", str(output)]
    argv += ["--ray", "local", "--actors", "2", "--concurrency", "2", "--servers", "1"]
    argv += ["--progress", "plain", "--backend", "trio"]
    process = await anyio.open_process(argv, env=env)
    lines: list[str] = []
    running: set[str] = set()
    async with process:
        assert process.stderr is not None
        buffer = ""
        async for chunk in TextReceiveStream(process.stderr):
            buffer += chunk
            *complete, buffer = buffer.split("\n")
            lines += complete
            # Progress lines are "[done/total] ..."; Ray's own log lines start with "[" too.
            reported = sum(bool(PROGRESS.match(line)) for line in lines)
            if interrupt_after is not None and reported >= interrupt_after:
                running = set(processes_with(MARKER, env[MARKER]).values())
                process.send_signal(signal.SIGINT)
                interrupt_after = None
        code = await process.wait()
    return code, lines, running


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_ctrl_c_on_the_driver_leaves_no_app_server_and_a_file_a_second_run_completes(
    tmp_path: Path, anyio_backend: str
) -> None:
    ids = [f"t{i}" for i in range(12)]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": i, "prompt": f"task {i}"}) + "\n" for i in ids))
    output = tmp_path / "results.jsonl"

    def script(request: RecordedRequest) -> Reply:
        return message(f"done: {prompt_of(request)}", deltas=4, delay=0.2)

    run = uuid.uuid4().hex
    with anyio.fail_after(180):
        async with ScriptedModel(script) as model:
            home = write_codex_home(tmp_path / "home", base_url=model.base_url)
            env = {**os.environ, **scripted_env(home), MARKER: run}
            code, lines, running = await _run_cli(tasks, output, env, interrupt_after=2)
            assert code == 130, "\n".join(lines)
            # The scan below does see the driver's Ray and the actors' runtimes while they run.
            assert {"raylet", "gcs_server", "codex"} <= running, running
            assert any("run the same command again" in line for line in lines)
            # Nothing of that driver is left: no app-server on any node, no Ray process.
            assert await until_gone(MARKER, run, which="all") == {}
            first = [json.loads(line)["id"] for line in output.read_text().splitlines()]
            assert 2 <= len(first) < len(ids)

            code, lines, _ = await _run_cli(tasks, output, env, interrupt_after=None)
            assert code == 0, "\n".join(lines)
            assert any(f"{len(first)} already done" in line for line in lines)
            assert await until_gone(MARKER, run, which="all") == {}
    every = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["id"] for r in every) == sorted(ids)  # none twice, none missing
    assert {r["status"] for r in every} == {"completed"}
