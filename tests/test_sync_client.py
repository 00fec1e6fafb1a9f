"""The synchronous ``Codex`` against the real runtime and the scripted model, on both portal
backends: results, streaming, and the same cancellation guarantees as the async client
(Ctrl-C, ``break``, ``timeout=``), each checked with ``thread.read(include_turns=True)``."""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_anyio import (
    ApprovalMode,
    Codex,
    CodexConfig,
    CodexNotFoundError,
    Sandbox,
    StartupError,
    SyncThread,
    TurnFailedError,
)
from codex_anyio._sync._portal import CLEANUP_WAIT
from codex_anyio.testing import failed, message, scripted_runtime, stall

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def deadline() -> Iterator[None]:
    """The sync twin of ``anyio.fail_after``: a test stuck for 90 s dumps every thread's
    stack and ends the run, rather than hanging CI."""
    faulthandler.dump_traceback_later(90, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def statuses(thread: SyncThread) -> list[str]:
    turns = thread.read(include_turns=True).thread.turns or []
    return [str(turn.status) for turn in turns]


def test_a_sync_codex_runs_turns_and_reports_server_info(backend: str, tmp_path: Path) -> None:
    script = [message("Hello there", deltas=3), message("Second.")]
    with scripted_runtime(script, backend=backend, directory=tmp_path) as rt:
        with Codex(rt.config, backend=backend) as codex:
            assert codex.metadata.serverInfo.name == "codex_anyio"
            assert codex.metadata.serverInfo.version
            thread = codex.thread_start()
            result = thread.run("hi")
            assert (result.status, result.final_response) == ("completed", "Hello there")
            handle = thread.turn("again")
            assert handle.run().final_response == "Second."
            assert statuses(thread) == ["completed", "completed"]


def test_stream_is_a_plain_iterator_ending_after_turn_completed(
    backend: str, tmp_path: Path
) -> None:
    with scripted_runtime([message("one two three", deltas=3)], directory=tmp_path) as rt:
        with Codex(rt.config, backend=backend) as codex:
            thread = codex.thread_start()
            methods = [event.method for event in thread.turn("go").stream()]
            assert methods[-1] == "turn/completed"
            assert methods.count("item/agentMessage/delta") == 3


def test_close_without_a_with_block_leaves_no_thread_or_process(
    backend: str, tmp_path: Path
) -> None:
    with scripted_runtime([message("ok")], directory=tmp_path) as rt:
        before = set(threading.enumerate())
        codex = Codex(rt.config, backend=backend)
        assert codex.thread_start().run("hi").final_response == "ok"
        process = codex.async_codex.client._transport._process
        codex.close()
        codex.close()  # idempotent
        assert process.returncode is not None
        # Daemon threads are the event loops' own idle caches (Trio's thread cache, AnyIO's
        # worker threads): they end by themselves and never hold the interpreter's exit.
        assert {t for t in threading.enumerate() if not t.daemon} <= before


def test_run_with_a_timeout_interrupts_the_turn_and_raises_timeout_error(
    backend: str, tmp_path: Path
) -> None:
    with scripted_runtime([stall(message("partial"))], directory=tmp_path) as rt:
        with Codex(rt.config, backend=backend) as codex:
            thread = codex.thread_start()
            with pytest.raises(TimeoutError):
                thread.run("slow", timeout=0.5)
            assert statuses(thread) == ["interrupted"]
            assert rt.model.exchanges[0].abandoned.is_set()


def test_breaking_out_of_the_sync_stream_interrupts_the_turn(backend: str, tmp_path: Path) -> None:
    with scripted_runtime([stall(message("partial", deltas=2))], directory=tmp_path) as rt:
        with Codex(rt.config, backend=backend) as codex:
            thread = codex.thread_start()
            for event in thread.turn("go").stream():
                if event.method == "item/agentMessage/delta":
                    break
            assert statuses(thread) == ["interrupted"]


def test_leaving_a_with_turn_block_early_interrupts_the_turn(backend: str, tmp_path: Path) -> None:
    with scripted_runtime([stall()], directory=tmp_path) as rt:
        with Codex(rt.config, backend=backend) as codex:
            thread = codex.thread_start()
            with pytest.raises(LookupError), thread.turn("go"):
                # Once the model is asked, the runtime has set the turn up (an interrupt sent
                # before that is refused with "no active turn", the core's business).
                rt.portal.call(rt.model.wait_for_requests, 1)
                raise LookupError
            assert statuses(thread) == ["interrupted"]


def test_a_failed_turn_raises_turn_failed_error_which_is_a_runtime_error(
    backend: str, tmp_path: Path
) -> None:
    with scripted_runtime([failed("model broke")], directory=tmp_path) as rt:
        with Codex(rt.config, backend=backend) as codex:
            with pytest.raises(RuntimeError) as caught:
                codex.thread_start().run("hi")
            assert isinstance(caught.value, TurnFailedError)


def test_official_presets_are_accepted_by_the_runtime(backend: str, tmp_path: Path) -> None:
    with scripted_runtime([message("a"), message("b")], directory=tmp_path) as rt:
        with Codex(rt.config, backend=backend) as codex:
            thread = codex.thread_start(
                approval_mode=ApprovalMode.deny_all, sandbox=Sandbox.read_only
            )
            first = thread.run("x", sandbox=Sandbox.workspace_write, source="tests")
            resumed = codex.thread_resume(thread.id, include_turns=True)
            second = resumed.run("y", approval_mode=ApprovalMode.auto_review)
            assert (first.final_response, second.final_response) == ("a", "b")
            sent = rt.model.requests
            assert len(sent) == 2


def test_a_missing_binary_is_a_file_not_found_error(backend: str, tmp_path: Path) -> None:
    config = CodexConfig(str(tmp_path / "no-such-codex"))
    with pytest.raises(FileNotFoundError) as caught:
        Codex(config, backend=backend)
    assert isinstance(caught.value, (CodexNotFoundError, StartupError))
    assert "no-such-codex" in str(caught.value)


CTRL_C_CHILD = """
import sys, threading
from codex_anyio import Codex
from codex_anyio.testing import message, scripted_runtime, stall

backend, mode = sys.argv[1], sys.argv[2]
with scripted_runtime([stall(message("partial", deltas=2))], backend=backend) as rt:
    with Codex(rt.config, backend=backend) as codex:
        thread = codex.thread_start()

        def announce():
            rt.portal.call(rt.model.wait_for_requests, 1)
            print("ready", flush=True)

        threading.Thread(target=announce, daemon=True).start()
        try:
            if mode == "run":
                thread.run("slow")
            else:
                for event in thread.turn("slow").stream():
                    pass
        except KeyboardInterrupt:
            turns = thread.read(include_turns=True).thread.turns
            print("status:", turns[-1].status, flush=True)
            print("abandoned:", rt.model.exchanges[0].abandoned.is_set(), flush=True)
"""


@pytest.mark.parametrize("mode", ["run", "stream"])
def test_ctrl_c_interrupts_the_turn_before_keyboard_interrupt_propagates(
    backend: str, mode: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CTRL_C_CHILD), backend, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:  # pragma: no cover - only on failure
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert "status: interrupted" in out
    assert "abandoned: True" in out


def test_stream_text_delivers_every_delta_in_order_past_the_batch_limit(
    backend: str, tmp_path: Path
) -> None:
    words = [f"w{i} " for i in range(3000)]
    with scripted_runtime([message("".join(words), deltas=words)], directory=tmp_path) as rt:
        with Codex(rt.config, backend=backend) as codex:
            handle = codex.thread_start().turn("go")
            assert list(handle.stream_text()) == words
            assert handle.result().final_response == "".join(words)


LEAK_CHILD = """
import sys, tempfile
from codex_anyio import Codex, CodexConfig
from codex_anyio.testing import scripted_env

home = tempfile.mkdtemp()
config = CodexConfig(env=scripted_env(home), codex_home=home, cwd=home)
codex = Codex(config, backend=sys.argv[1], require_credentials=False)
print(codex.metadata.serverInfo.name, flush=True)
"""


def test_a_client_never_closed_is_closed_at_exit_instead_of_hanging_the_interpreter(
    backend: str,
) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", textwrap.dedent(LEAK_CHILD), backend],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "codex_anyio"
    assert "ResourceWarning: unclosed" in done.stderr


STARTUP_CHILD = """
import sys, tempfile
from codex_anyio import Codex, CodexConfig
from codex_anyio.testing import scripted_env

home = tempfile.mkdtemp()
config = CodexConfig(env=scripted_env(home), codex_home=home, cwd=home)
try:
    print("starting", flush=True)
    with Codex(config, backend=sys.argv[1], require_credentials=False):
        print("started", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_while_the_client_starts_ends_the_start_without_hanging(backend: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(STARTUP_CHILD), backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "starting"
        child.send_signal(signal.SIGINT)  # lands while the portal or the runtime starts
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:  # pragma: no cover - only on failure
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert out.strip() in {"interrupted", "started"}


def test_cancel_interrupts_the_turn_and_returns_its_result(backend: str, tmp_path: Path) -> None:
    with scripted_runtime([stall()], directory=tmp_path) as rt:
        with Codex(rt.config, backend=backend) as codex:
            thread = codex.thread_start()
            with thread.turn("go") as handle:
                result = handle.cancel()
            assert result.status == "interrupted"
            assert thread.read(include_turns=True).thread.turns[-1].status == "interrupted"


FORK_CHILD = """
import os, sys, tempfile, threading
from codex_anyio import Codex, CodexConfig, ForkedClientError
from codex_anyio.testing import scripted_env

backend, mode = sys.argv[1], sys.argv[2]
home = tempfile.mkdtemp()
config = CodexConfig(env=scripted_env(home), codex_home=home, cwd=home)
codex = Codex(config, backend=backend, require_credentials=False)
thread = codex.thread_start()
child = os.fork()
if child == 0:
    if mode == "use":
        try:
            thread.run("hi", timeout=5)
        except ForkedClientError as exc:
            print("child:", exc, flush=True)
            os._exit(3)
        os._exit(1)
    sys.exit(0)  # a plain exit: the interpreter's exit hooks run in the child too
waited = []
waiter = threading.Thread(target=lambda: waited.append(os.waitpid(child, 0)), daemon=True)
waiter.start()
waiter.join(30)
if not waited:
    os.kill(child, 9)
    print("child hung", flush=True)
else:
    print("child status:", os.waitstatus_to_exitcode(waited[0][1]), flush=True)
# The child touched nothing of ours: the runtime still serves the parent.
print("parent served:", codex.thread_start().id != thread.id, flush=True)
codex.close()
"""


@pytest.mark.parametrize(("mode", "status"), [("use", 3), ("exit", 0)])
def test_a_forked_child_gets_a_clear_error_and_exits_without_hanging(
    backend: str, mode: str, status: int
) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", textwrap.dedent(FORK_CHILD), backend, mode],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert f"child status: {status}" in done.stdout, done.stdout + done.stderr
    if mode == "use":
        assert "belongs to process" in done.stdout
    assert "parent served: True" in done.stdout


async def _set_within(seconds: float, event: Any) -> None:
    with anyio.fail_after(seconds):
        await event.wait()


def test_a_stream_dropped_on_the_event_loop_thread_interrupts_its_turn_without_blocking_it(
    backend: str, tmp_path: Path
) -> None:
    with scripted_runtime([stall(message("partial", deltas=2))], directory=tmp_path) as rt:
        with Codex(rt.config, backend=backend) as codex:
            events = codex.thread_start().turn("go").stream()
            next(events)  # the pump runs in the loop
            rt.portal.call(rt.model.wait_for_requests, 1)
            holder = [events]
            del events
            # The last reference goes on the loop thread, so the generator is finalized there
            # (as when a cycle holding it is collected there): it must not wait for a clean-up
            # that needs the very loop it blocks.
            dropped = codex.portal.start_task_soon(holder.clear)
            dropped.result(timeout=CLEANUP_WAIT / 3)
            # The clean-up ran all the same: the turn was interrupted on the server.
            rt.portal.call(_set_within, 30, rt.model.exchanges[0].abandoned)


def call_from_a_running_loop(loop: str, calls: Callable[[], None]) -> None:
    """Run ``calls`` inside a running asyncio or Trio loop, as a Jupyter cell would."""

    async def cell() -> None:
        calls()

    if loop == "trio":
        import trio

        trio.run(cell)
    else:
        asyncio.run(cell())


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_a_sync_call_from_a_running_event_loop_warns_once_that_it_blocks_the_loop(
    loop: str, tmp_path: Path
) -> None:
    with scripted_runtime([message("one"), message("two")], directory=tmp_path) as rt:
        with Codex(rt.config) as codex:

            def calls() -> None:
                with pytest.warns(RuntimeWarning, match="use AsyncCodex") as caught:
                    thread = codex.thread_start()
                assert [w.filename for w in caught] == [__file__]  # points at the caller
                # Only the first call warns: the later ones (filterwarnings=error) pass.
                assert thread.run("hi").final_response == "one"
                assert [text for text in thread.turn("again").stream_text()] == ["two"]

            call_from_a_running_loop(loop, calls)


def test_a_sync_call_from_a_worker_thread_of_a_running_loop_does_not_warn(
    tmp_path: Path,
) -> None:
    with scripted_runtime([message("ok")], directory=tmp_path) as rt:
        with Codex(rt.config) as codex:

            async def cell() -> str:
                # The way to call the sync client from async code without blocking the loop.
                return await asyncio.to_thread(
                    lambda: codex.thread_start().run("hi").final_response
                )

            assert asyncio.run(cell()) == "ok"


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_creating_a_sync_codex_inside_a_running_event_loop_warns(loop: str, tmp_path: Path) -> None:
    with scripted_runtime([], directory=tmp_path) as rt:

        def calls() -> None:
            with pytest.warns(RuntimeWarning, match="blocks this thread's running event loop"):
                codex = Codex(rt.config)
            codex.close()

        call_from_a_running_loop(loop, calls)
