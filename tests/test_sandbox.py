"""The runtime inside a sandbox, started by ``CodexConfig(command=...)``, against the real
runtime and the scripted model: turns, approvals, dynamic tools, interrupt, clean-up and
faults, in the sandboxes this machine can make (``bwrap``, ``unshare``: a pid namespace of
their own, the host's network, so the loopback model is reachable).

"Nothing left in the sandbox" is judged by the sandbox's own pid namespace: after the client
closed, no process on the machine is in it. The tests that must show the runtime's own
shutdown does that, as under ``docker exec`` where the host can only close the client's
stdin, turn the host-side nets off (the ``/proc`` reaper and the process-group signals).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_anyio import (
    ApprovalPolicy,
    AsyncCodex,
    CodexConfig,
    CodexNotFoundError,
    Handlers,
    StartupError,
    TransportClosedError,
    runtime_path,
    serve_app_server,
)
from codex_anyio._wire import _reap, _transport
from codex_anyio.testing import (
    ScriptedCodex,
    ScriptedModel,
    exec_command,
    function_call,
    message,
    open_scripted_codex,
    scripted_env,
    stall,
    write_codex_home,
)

from .conftest import alive

pytestmark = pytest.mark.anyio

RUNTIME = os.fspath(runtime_path())


def bwrap() -> str:
    """A bubblewrap: the machine's, else the one the runtime's wheel ships for its own
    sandbox (``resourcesDir`` of its ``codex-package.json``), so the tests need no package.

    (Debian's bubblewrap at ``/usr/bin/bwrap`` is not installed for them on purpose: with it
    on PATH, runtime 0.163.0 prefers it for its own sandbox and every ``read-only`` command
    fails with "bwrap: execvp codex-linux-sandbox: No such file or directory".)
    """
    found = shutil.which("bwrap")
    if found is not None:
        return found
    package = Path(RUNTIME).parent.parent
    try:
        layout = json.loads((package / "codex-package.json").read_text())
    except (OSError, ValueError):
        return "bwrap"
    return os.fspath(package / layout.get("resourcesDir", "codex-resources") / "bwrap")


def bwrap_prefix() -> list[str]:
    """A bubblewrap sandbox: the host's files and network, a pid namespace of its own."""
    return [bwrap(), "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--"]


def unshare_prefix() -> list[str]:
    """An ``unshare`` sandbox: a user and pid namespace of its own, its own /proc."""
    return ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--"]


PREFIXES = {"bwrap": bwrap_prefix, "unshare": unshare_prefix}

SANDBOX_IS_THE_BOUNDARY: dict[str, Any] = {"sandbox_mode": "danger-full-access"}
"""The runtime's own sandbox off: the outer one is the boundary, and the commands then run
in its pid namespace, where its process list shows them (the runtime's read-only sandbox
would give each command a namespace of its own, nested inside)."""


@cache
def unusable(kind: str) -> str | None:
    """Why sandbox ``kind`` cannot be made here (None: it can)."""
    program = PREFIXES[kind]()[0]
    if shutil.which(program) is None:
        return f"{program} is not installed (it comes with the runtime's wheel / util-linux)"
    probe = subprocess.run([*PREFIXES[kind](), "true"], capture_output=True, text=True)
    if probe.returncode:
        return f"{program} cannot make a pid namespace here: {probe.stderr.strip()}"
    return None


@pytest.fixture(params=list(PREFIXES))
def sandbox(request: pytest.FixtureRequest) -> list[str]:
    """The command that starts the bundled runtime in a sandbox (each kind this machine can
    make; the others skip, saying why)."""
    reason = unusable(request.param)
    if reason is not None:
        pytest.skip(reason)
    return [*PREFIXES[request.param](), RUNTIME, "app-server"]


def any_sandbox() -> list[str]:
    for kind in PREFIXES:
        if unusable(kind) is None:
            return PREFIXES[kind]()
    pytest.skip("neither bwrap nor unshare can make a pid namespace here")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            parent = int(stat.rpartition(b")")[2].split()[1])
            tree.setdefault(parent, []).append(int(name))
    return tree


def pid_namespace_of(s: ScriptedCodex) -> str:
    """The sandbox's pid namespace: that of the wrapper's descendants that are not in ours."""
    ours = os.readlink("/proc/self/ns/pid")
    tree = _children()
    todo = [s.codex.client._transport.pid]  # type: ignore[attr-defined]
    while todo:
        for pid in tree.get(todo.pop(), []):
            try:
                namespace = os.readlink(f"/proc/{pid}/ns/pid")
            except OSError:
                continue
            if namespace != ours:
                return namespace
            todo.append(pid)
    raise AssertionError("the runtime is not in a pid namespace of its own")


def in_namespace(namespace: str) -> list[str]:
    """The command lines of every living process in ``namespace`` (the sandbox's own process
    list, seen from the host; a zombie has ended, only its parent has not collected it yet)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/pid") != namespace or not alive(int(name)):
                continue
            command = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        found.append(command.replace(b"\0", b" ").decode(errors="replace"))
    return found


async def wait_for_command(s: ScriptedCodex, namespace_of: Any, needle: str) -> str:
    """Wait until a process running ``needle`` is in the sandbox; return its namespace."""
    namespace = namespace_of(s)
    while not any(needle in line for line in in_namespace(namespace)):  # noqa: ASYNC110
        await anyio.sleep(0.05)  # another process tree: nothing to await
    return namespace


@pytest.fixture
def host_only_closes_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the host can do for a runtime it cannot see (``docker exec``): close the
    client's stdin and nothing else: no ``/proc`` reaping, no signals to the process group
    (the wrapper still exits by itself when the runtime does)."""

    async def nothing(self: object) -> None:
        return None

    monkeypatch.setattr(_reap.ProcessTreeReaper, "snapshot", nothing)
    monkeypatch.setattr(_reap.ProcessTreeReaper, "reap", nothing)
    monkeypatch.setattr(_transport.StdioTransport, "_signal_group", lambda self, sig: None)


# -- the command path: turns, approvals, tools, interrupt ------------------------------------


async def test_a_turn_completes_with_the_runtime_in_a_sandbox(sandbox: list[str]) -> None:
    with anyio.fail_after(60):
        async with open_scripted_codex([message("Hello from inside.")], command=sandbox) as s:
            result = await (await s.codex.thread_start()).run("hi")
            assert (result.status, result.final_response) == ("completed", "Hello from inside.")
            assert pid_namespace_of(s) != os.readlink("/proc/self/ns/pid")


async def test_an_approval_from_a_sandboxed_runtime_reaches_the_handler_and_the_command_runs(
    sandbox: list[str],
) -> None:
    script = [exec_command("touch approved.txt", escalate=True), message("ok")]
    handlers = Handlers(approvals=ApprovalPolicy.accept_all())
    with anyio.fail_after(60):
        async with open_scripted_codex(
            script, approval_policy="on-request", handlers=handlers, command=sandbox
        ) as s:
            result = await (await s.codex.thread_start()).run("make a file")
            assert result.status == "completed"
            assert (s.workspace / "approved.txt").exists()


async def test_a_dynamic_tool_on_the_host_answers_a_sandboxed_runtime(sandbox: list[str]) -> None:
    calls: list[str] = []

    async def lookup_order(order_id: str) -> str:
        """Look up an order's status."""
        calls.append(order_id)
        return f"order {order_id} has shipped"

    script = [function_call("lookup_order", {"order_id": "42"}), message("It shipped.")]
    with anyio.fail_after(60):
        async with open_scripted_codex(script, command=sandbox) as s:
            thread = await s.codex.thread_start(dynamic_tools=[lookup_order])
            result = await thread.run("where is order 42?")
            assert (result.final_response, calls) == ("It shipped.", ["42"])
            assert "order 42 has shipped" in str(s.model.function_call_outputs())


async def test_leaving_a_scope_interrupts_the_turn_of_a_sandboxed_runtime(
    sandbox: list[str],
) -> None:
    with anyio.fail_after(60):
        async with open_scripted_codex([stall(message("Thinking"))], command=sandbox) as s:
            thread = await s.codex.thread_start()
            with anyio.move_on_after(1.0):
                await thread.run("write an essay")
            read = await thread.read(include_turns=True)
            assert str(read.thread.turns[-1].status) == "interrupted"


async def test_config_overrides_reach_the_runtime_through_the_sandbox_command(
    tmp_path: Path,
) -> None:
    command = [*any_sandbox(), RUNTIME, "app-server"]
    with anyio.fail_after(60):
        async with ScriptedModel([message("ok")]) as model:
            home = write_codex_home(tmp_path / "home", base_url=model.base_url)
            config = CodexConfig(
                command=command,
                config_overrides=['model="overridden-model"'],
                env=scripted_env(home, home=tmp_path),
                cwd=tmp_path,
            )
            async with AsyncCodex(config) as codex:
                await (await codex.thread_start()).run("hi")
            assert model.requests[0].body["model"] == "overridden-model"


async def test_a_sandboxed_runtime_can_listen_for_clients_to_attach_instead(
    tmp_path: Path,
) -> None:
    stopped = tmp_path / "stopped"
    with anyio.fail_after(60):
        async with ScriptedModel([message("attached")]) as model:
            home = write_codex_home(tmp_path / "home", base_url=model.base_url)
            config = CodexConfig(
                command=[*any_sandbox(), RUNTIME, "app-server"],
                stop_command=["touch", os.fspath(stopped)],
                env=scripted_env(home, home=tmp_path),
                cwd=tmp_path,
            )
            async with serve_app_server(config, "ws://127.0.0.1:0") as server:
                async with AsyncCodex(server.client_config()) as codex:
                    result = await (await codex.thread_start()).run("hi")
                    assert result.final_response == "attached"
                assert not stopped.exists()
            assert stopped.exists()


# -- clean-up inside the sandbox ----------------------------------------------------------------


@pytest.mark.usefixtures("host_only_closes_stdin")
async def test_closing_the_client_ends_a_running_command_in_the_sandbox_with_only_stdin_closed(
    sandbox: list[str],
) -> None:
    script = [exec_command("sleep 1001 & sleep 1002"), stall()]
    with anyio.fail_after(60):
        async with open_scripted_codex(script, command=sandbox, **SANDBOX_IS_THE_BOUNDARY) as s:
            thread = await s.codex.thread_start()
            handle = await thread.turn("run something long")
            namespace = await wait_for_command(s, pid_namespace_of, "sleep 1002")
            assert handle.status == "inProgress"
        # Closed: the runtime saw its input end and ended its commands; the sandbox is empty.
        assert in_namespace(namespace) == []


async def test_a_command_that_left_the_runtimes_process_group_ends_with_the_sandbox(
    sandbox: list[str],
) -> None:
    script = [exec_command("setsid sleep 1003 & sleep 1004"), stall()]
    with anyio.fail_after(60):
        async with open_scripted_codex(script, command=sandbox, **SANDBOX_IS_THE_BOUNDARY) as s:
            handle = await (await s.codex.thread_start()).turn("run something long")
            namespace = await wait_for_command(s, pid_namespace_of, "sleep 1003")
            assert handle.status == "inProgress"
    assert in_namespace(namespace) == []


async def test_the_stop_command_runs_once_the_runtime_has_ended(tmp_path: Path) -> None:
    stopped = tmp_path / "stopped"
    with anyio.fail_after(60):
        async with ScriptedModel([message("ok")]) as model:
            home = write_codex_home(tmp_path / "home", base_url=model.base_url)
            config = CodexConfig(
                command=[*any_sandbox(), RUNTIME, "app-server"],
                stop_command=["sh", "-c", f'test -n "$CODEX_HOME" && touch {stopped}'],
                env=scripted_env(home, home=tmp_path),
                cwd=tmp_path,
            )
            async with AsyncCodex(config) as codex:
                await (await codex.thread_start()).run("hi")
                assert not stopped.exists()
        assert stopped.exists()


async def test_a_stop_command_that_fails_is_logged_and_the_close_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(60):
        async with ScriptedModel([]) as model:
            home = write_codex_home(tmp_path / "home", base_url=model.base_url)
            config = CodexConfig(
                command=[*any_sandbox(), RUNTIME, "app-server"],
                stop_command=["sh", "-c", "echo no such container >&2; exit 3"],
                env=scripted_env(home, home=tmp_path),
                cwd=tmp_path,
            )
            async with AsyncCodex(config):
                pass
    assert "exited with 3: no such container" in caplog.text


# -- faults ---------------------------------------------------------------------------------------


async def test_a_sandbox_command_that_is_not_found_is_a_startup_error_naming_it() -> None:
    config = CodexConfig(command=["no-such-sandbox-tool", "codex", "app-server"])
    with anyio.fail_after(10), pytest.raises(CodexNotFoundError) as caught:
        async with AsyncCodex(config):
            pass
    assert "the sandbox command 'no-such-sandbox-tool'" in str(caught.value)


async def test_a_sandbox_without_the_runtime_fails_start_up_naming_the_command_and_its_stderr(
    tmp_path: Path,
) -> None:
    command = [*any_sandbox(), "/no/such/codex", "app-server"]
    with anyio.fail_after(20), pytest.raises(StartupError) as caught:
        async with AsyncCodex(CodexConfig(command=command, cwd=tmp_path)):
            pass
    message_ = str(caught.value)
    assert "the app-server started by `" in message_
    assert "/no/such/codex app-server` exited during start-up" in message_
    assert "/no/such/codex" in caught.value.stderr_tail  # what the sandbox said
    assert caught.value.returncode not in (None, 0)


async def test_a_secret_on_the_sandbox_command_line_stays_out_of_the_error_naming_it(
    tmp_path: Path,
) -> None:
    key = "sk-not-a-real-key-0123456789"
    command = [*any_sandbox(), "env", f"OPENAI_API_KEY={key}", "/no/such/codex", "app-server"]
    with anyio.fail_after(20), pytest.raises(StartupError) as caught:
        async with AsyncCodex(CodexConfig(command=command, cwd=tmp_path)):
            pass
    assert "OPENAI_API_KEY=[REDACTED] /no/such/codex app-server` exited" in str(caught.value)
    assert key not in str(caught.value)


async def test_a_sandbox_that_dies_mid_turn_fails_the_turn_naming_the_command(
    sandbox: list[str],
) -> None:
    with anyio.fail_after(60):
        async with open_scripted_codex([stall(message("Thinking"))], command=sandbox) as s:
            namespace = pid_namespace_of(s)
            handle = await (await s.codex.thread_start()).turn("think")
            with pytest.raises(TransportClosedError) as caught:
                # The sandbox's first process (its init) dies: the kernel ends all in it.
                os.kill(_init_of(namespace), signal.SIGKILL)
                await handle.run()
            assert f"the app-server started by `{sandbox[0]} " in str(caught.value)
            assert caught.value.returncode is not None
    assert in_namespace(namespace) == []


def _init_of(namespace: str) -> int:
    """The host pid of a namespace's first process (the lowest host pid in it)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") == namespace:
                    pids.append(int(name))
            except OSError:
                continue
    return min(pids)


def test_command_and_launch_args_override_are_one_mechanism_not_two() -> None:
    with pytest.raises(ValueError, match="command or launch_args_override, not both"):
        CodexConfig(command=["a"], launch_args_override=["b"])
    with pytest.raises(ValueError, match="command or codex_bin, not both"):
        CodexConfig(command=["a"], codex_bin="codex")
    assert CodexConfig(launch_args_override=["run", "as-is"], config_overrides=["a=1"]).argv() == [
        "run",
        "as-is",
    ]
    wrapped = CodexConfig(command=["ssh", "host", "codex", "app-server"], config_overrides=["a=1"])
    assert wrapped.argv() == ["ssh", "host", "codex", "app-server", "--config", "a=1"]
    assert wrapped.argv("ws://127.0.0.1:0")[-2:] == ["--listen", "ws://127.0.0.1:0"]


def test_runtime_path_is_the_bundled_static_runtime() -> None:
    path = runtime_path()
    assert path.is_file()
    assert os.access(path, os.X_OK)
    assert CodexConfig().argv()[0] == os.fspath(path)
