"""CodexPool against the real runtime: placement, a member killed mid-turn, turn limits, lean
threads, and the process tree reaped at shutdown."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from codex_anyio import (
    CodexPool,
    RestartsExhaustedError,
    ServerUnresponsiveError,
    TransportClosedError,
    lean_thread_options,
)
from codex_anyio.testing import (
    RecordedRequest,
    Reply,
    ScriptedModel,
    function_call,
    message,
    open_scripted_pool,
    stall,
)

from .conftest import alive, processes_marked_by

pytestmark = pytest.mark.anyio


def prompt_of(request: RecordedRequest) -> str:
    """The last user text the runtime sent to the model."""
    texts = [
        part.get("text", "")
        for item in request.body.get("input", [])
        if item.get("role") == "user"
        for part in item.get("content", [])
    ]
    return texts[-1] if texts else ""


def echo(request: RecordedRequest) -> Reply:
    text = prompt_of(request)
    return stall() if text.startswith("stall") else message(f"re: {text}")


def tool_names(request: RecordedRequest) -> set[str]:
    return {tool.get("name") or tool.get("type") for tool in request.body.get("tools", [])}


async def test_the_pool_spreads_threads_across_its_members(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with open_scripted_pool(echo, servers=2, directory=tmp_path) as s:
            pids = s.pool.member_pids()
            assert len(set(pids)) == 2
            threads = [await s.pool.thread_start() for _ in range(4)]
            assert sorted(t.member for t in threads) == [0, 0, 1, 1]
            results = [await t.run(f"hello {i}") for i, t in enumerate(threads)]
            assert [r.final_response for r in results] == [f"re: hello {i}" for i in range(4)]
            for thread in threads:
                await s.pool.finish_thread(thread)
            assert [m.open_threads for m in s.pool.statistics().members] == [0, 0]


async def test_a_killed_member_fails_its_turn_and_is_restarted_while_the_pool_keeps_serving(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(60):
        async with open_scripted_pool(echo, servers=2, directory=tmp_path) as s:
            pool = s.pool
            victim = await pool.thread_start()
            other = await pool.thread_start()
            assert victim.member != other.member
            old_pid = pool.member_pids()[victim.member]
            assert old_pid is not None
            async with victim.turn("stall here") as turn:
                await s.model.wait_for_requests(1)
                os.kill(old_pid, signal.SIGKILL)
                with pytest.raises(TransportClosedError):
                    await turn.run()
            # The other member never stopped serving.
            assert (await other.run("still there?")).final_response == "re: still there?"
            while pool.statistics().members[victim.member].starts < 2:
                await pool.wait_changed()
            new_pid = pool.member_pids()[victim.member]
            assert new_pid not in (None, old_pid)
            assert pool.statistics().restarts == 1
            # The dead process's thread is gone with it; the restarted member serves new ones.
            with pytest.raises(TransportClosedError):
                await victim.run("again")
            await pool.finish_thread(victim)
            results = [await pool.run(f"after {i}") for i in range(2)]
            assert [r.status for r in results] == ["completed", "completed"]


async def test_one_shot_runs_use_lean_threads_with_unused_features_off(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with open_scripted_pool(echo, servers=2, directory=tmp_path) as s:
            result = await s.pool.run("lean?")
            assert result.final_response == "re: lean?"
            tools = tool_names(s.model.requests[-1])
            assert "exec_command" in tools
            assert not tools & {"multi_agent_v1", "get_goal", "create_goal"}
            # One-shot threads are released, so the load of every member is back to zero.
            assert all(m.open_threads == 0 for m in s.pool.statistics().members)
    assert lean_thread_options()["ephemeral"] is True
    assert lean_thread_options()["config"]["features"]["shell_snapshot"] is False


async def test_max_turns_keeps_a_burst_waiting_in_the_client(tmp_path: Path) -> None:
    overlapping = 0
    model: ScriptedModel | None = None

    def slow(request: RecordedRequest) -> Reply:
        nonlocal overlapping
        assert model is not None
        overlapping = max(overlapping, sum(not e.finished.is_set() for e in model.exchanges))
        return message("done", deltas=3, delay=0.05)

    with anyio.fail_after(60):
        async with open_scripted_pool(slow, servers=2, max_turns=1, directory=tmp_path) as s:
            model = s.model
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(s.pool.run, f"t{i}")
            assert len(s.model.exchanges) == 3
    assert overlapping == 0


WATCHDOG = {"probe_interval": 0.2, "probe_timeout": 0.5}
"""A quick watchdog for tests (the defaults take up to 14 s to condemn a member)."""


async def wait_restarted(pool: CodexPool, member: int, old_pid: int) -> None:
    """Until ``member`` runs a new process, and the old one is reaped (no zombie, no
    stopped leftover)."""
    while (
        pool.statistics().members[member].starts < 2 or not pool.statistics().members[member].ready
    ):
        await pool.wait_changed()
    assert pool.member_pids()[member] not in (None, old_pid)
    assert not alive(old_pid)


async def test_a_stopped_member_is_killed_and_its_waiting_starts_run_on_another(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(60):
        async with open_scripted_pool(echo, servers=2, **WATCHDOG, directory=tmp_path) as s:
            pool = s.pool
            stopped = pool.member_pids()[1]
            assert stopped is not None
            os.kill(stopped, signal.SIGSTOP)
            try:
                results = []

                async def one(i: int) -> None:
                    results.append((await pool.run(f"task {i}")).final_response)

                # Half the runs are placed on the stopped member, whose thread/start never
                # answers: the watchdog fails them and they start on the other member.
                async with anyio.create_task_group() as tg:
                    for i in range(8):
                        tg.start_soon(one, i)
                assert sorted(results) == sorted(f"re: task {i}" for i in range(8))
                assert pool.statistics().unresponsive == 1
                await wait_restarted(pool, 1, stopped)
            finally:
                if alive(stopped):  # only on failure: let it be reaped
                    os.kill(stopped, signal.SIGCONT)
            assert (await pool.run("after")).status == "completed"


async def test_a_turn_on_a_member_that_stops_fails_with_server_unresponsive_error(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(60):
        async with open_scripted_pool(echo, servers=2, **WATCHDOG, directory=tmp_path) as s:
            pool = s.pool
            failures: list[BaseException] = []

            async def stalled_run() -> None:
                try:
                    await pool.run("stall here")
                except ServerUnresponsiveError as exc:
                    failures.append(exc)

            stopped = None
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(stalled_run)
                    await s.model.wait_for_requests(1)
                    busy = next(m for m in pool.statistics().members if m.running_turns)
                    stopped = busy.pid
                    assert stopped is not None
                    os.kill(stopped, signal.SIGSTOP)
                [error] = failures
                assert "probe_timeout=0.5" in str(error)
                # The turn had started: it is not retried elsewhere (it may have acted).
                assert len(s.model.requests) == 1
                await wait_restarted(pool, busy.member, stopped)
            finally:
                if stopped is not None and alive(stopped):  # only on failure
                    os.kill(stopped, signal.SIGCONT)


async def test_a_member_exiting_past_max_restarts_fails_waiting_and_new_calls(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(60):
        async with open_scripted_pool(
            echo, servers=1, max_restarts=1, restart_window=30, directory=tmp_path
        ) as s:
            pool = s.pool
            pid = pool.member_pids()[0]
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            while pool.statistics().members[0].starts < 2:
                await pool.wait_changed()
            pid = pool.member_pids()[0]
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            # A second exit inside the window uses the restarts up: a call made while the
            # member is going down waits for it, then fails, naming the limit and the exit.
            with pytest.raises(RestartsExhaustedError) as caught:
                await pool.run("hello")
            assert "max_restarts=1" in str(caught.value)
            assert caught.value.returncode == -signal.SIGKILL
            stats = pool.statistics()
            assert (stats.ready, stats.restarts, stats.members[0].given_up) == (0, 1, True)
            # New calls fail at once too.
            with pytest.raises(RestartsExhaustedError):
                await pool.run("again")
            with pytest.raises(RestartsExhaustedError):
                await pool.wait_ready()


async def test_leaving_the_pool_reaps_a_setsid_child_of_a_command(tmp_path: Path) -> None:
    pid_file = tmp_path / "workspace" / "child.pid"
    # The command returns once the child has its own session (before that, the runtime's
    # clean-up of the command's process group would still reach it).
    command = (
        f"setsid sh -c 'echo $$ > {pid_file}; exec sleep 300' >/dev/null 2>&1 </dev/null & "
        f"while [ ! -s {pid_file} ]; do sleep 0.05; done"
    )
    # login=False: no rc files, so a slow or locked ~/.bashrc cannot stall the command.
    script = [function_call("exec_command", {"cmd": command, "login": False}), message("started")]
    with anyio.fail_after(60):
        async with open_scripted_pool(
            script, servers=2, sandbox_mode="danger-full-access", directory=tmp_path
        ) as s:
            result = await s.pool.run("start a daemon")
            assert result.status == "completed"
            child = int(pid_file.read_text())
            assert alive(child)
            assert os.getsid(child) == child  # its own session: a group kill misses it
        try:
            assert not alive(child)
        finally:
            if alive(child):
                os.kill(child, signal.SIGKILL)


async def test_a_pool_that_cannot_start_raises_the_runtimes_reason(tmp_path: Path) -> None:
    from codex_anyio import CodexConfig, StartupError

    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('approval_policy = "untrusted"\n')
    with anyio.fail_after(30):
        with pytest.raises(StartupError, match="untrusted"):
            async with CodexPool(2, config=CodexConfig(codex_home=home)):
                pass


async def test_a_member_is_recycled_after_so_many_threads_once_idle(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with open_scripted_pool(echo, servers=1, recycle_after=2, directory=tmp_path) as s:
            first_pid = s.pool.member_pids()[0]
            for i in range(3):
                assert (await s.pool.run(f"r{i}")).status == "completed"
            stats = s.pool.statistics()
            assert stats.members[0].starts == 2
            assert stats.restarts == 0  # a recycle is not a crash
            assert s.pool.member_pids()[0] != first_pid


@pytest.mark.parametrize(("cpus", "servers"), [(None, 2), (1, 2), (2, 2), (8, 8), (64, 32)])
def test_the_default_process_count_is_one_per_cpu_between_2_and_32(
    monkeypatch: pytest.MonkeyPatch, cpus: int | None, servers: int
) -> None:
    from codex_anyio.pool._pool import default_servers

    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert default_servers() == servers


def test_the_pool_benchmark_runs_every_client_end_to_end() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.pool", "--ks", "2", "--repeats", "1"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and " 2 |" in line]
    clients = [row.split("|")[1].strip() for row in rows]
    assert clients == ["raw-best", "batch", "batch (whole command)", "pool", "lean-1", "default"]
    assert all(row.rstrip(" |").endswith("0") for row in rows)  # no failures


def marked_processes() -> list[int]:
    """Living processes started by a runtime of this test process (their marker names us)."""
    return processes_marked_by(os.getpid())


async def test_nothing_the_runtimes_started_outlives_the_pool(tmp_path: Path) -> None:
    # Default threads: every thread/start spawns a shell-snapshot shell in a session of its
    # own; leaving right away catches them mid-flight.
    with anyio.fail_after(60):
        snapshots_on = {"config": {"features": {"shell_snapshot": True}}}
        async with open_scripted_pool(
            echo, servers=2, thread_defaults=snapshots_on, directory=tmp_path
        ) as s:
            for _ in range(4):
                await s.pool.thread_start()
            assert marked_processes()  # the runtimes themselves, at least
        assert marked_processes() == []


async def test_cancelling_a_one_shot_run_interrupts_its_turn(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with open_scripted_pool(echo, servers=2, directory=tmp_path) as s:
            with anyio.move_on_after(0.5) as scope:
                await s.pool.run("stall forever")
            assert scope.cancelled_caught
            await s.model.exchanges[0].abandoned.wait()  # the runtime dropped the stream
            assert s.pool.statistics().running_turns == 0
            assert all(m.open_threads == 0 for m in s.pool.statistics().members)


async def test_turns_per_server_bounds_each_member(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with open_scripted_pool(
            echo, servers=2, max_turns=None, turns_per_server=1, directory=tmp_path
        ) as s:
            threads = [await s.pool.thread_start() for _ in range(4)]
            async with threads[0].turn("stall a") as first:
                # The other thread on member 0 must wait; member 1 still serves.
                assert threads[2].member == threads[0].member != threads[1].member
                with anyio.move_on_after(0.3) as waited:
                    await threads[2].run("hello")
                assert waited.cancelled_caught
                assert (await threads[1].run("hello")).status == "completed"
                await first.interrupt()
