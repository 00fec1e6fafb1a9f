"""The ``codex-anyio`` command as a user meets it, in subprocesses: signals, errors, login.

- ``serve`` and ``demo`` stop everything they started on SIGINT, SIGTERM and SIGHUP alike
  (no process carrying the runtime's marker is left, the temporary files are gone) and exit
  with 128 + the signal's number, on both backends.
- An error is one line (``codex-anyio <command>: ...``) and status 1; ``-v`` adds the
  traceback.
- ``login`` / ``login status`` / ``logout`` against the real runtime with an isolated
  ``CODEX_HOME``, in a network namespace of its own (``unshare -rn``: nothing can leave the
  machine); the device-code flow, which must reach the auth server for its code, against the
  fake app-server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.text import TextReceiveStream

from .conftest import FAKE_SERVER, offline_home, processes_marked_by, requires_netns

pytestmark = pytest.mark.anyio

CLI = (sys.executable, "-m", "codex_anyio")

STOPS = pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name
)

KEY = "sk-test-0123456789-not-a-real-key"


def offline(*argv: str) -> list[str]:
    """``codex-anyio ARGV`` in a private network namespace (same pid: unshare execs)."""
    return ["unshare", "-rn", *CLI, *argv]


async def read_until(process: anyio.abc.Process, text: str) -> str:
    """What the command printed on stdout up to and including ``text``: it is ready."""
    assert process.stdout is not None
    printed = ""
    async for chunk in TextReceiveStream(process.stdout):
        printed += chunk
        if text in printed:
            return printed
    raise AssertionError(f"the command ended before printing {text!r}:\n{printed}")


@contextmanager
def no_leftovers(tmp_path: Path) -> Iterator[tuple[dict[str, str], list[int], Path]]:
    """An environment whose temporary files go to a folder of the test, and the list to put
    the command's pid in; afterwards the folder must be empty and no process the command's
    runtimes started may be alive (any found are killed, so a failure leaves nothing)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    pids: list[int] = []
    try:
        yield {**os.environ, "TMPDIR": str(scratch)}, pids, scratch
    finally:
        left = [found for pid in pids for found in processes_marked_by(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert left == []


async def stop_with(
    argv: Sequence[str], ready: str, signum: int, tmp_path: Path, **kwargs: object
) -> tuple[int, str, Path]:
    """Start the command, wait until it printed ``ready``, send ``signum``; its exit status,
    its stderr and its scratch folder."""
    errors = tmp_path / "stderr.txt"
    with no_leftovers(tmp_path) as (env, pids, scratch), errors.open("wb") as stderr:
        async with await anyio.open_process(argv, env=env, stderr=stderr, **kwargs) as process:  # type: ignore[arg-type]
            pids.append(process.pid)
            await read_until(process, ready)
            assert processes_marked_by(process.pid)  # its runtime is up
            process.send_signal(signum)
            code = await process.wait()
    return code, errors.read_text(), scratch


# -- item 1: signals ---------------------------------------------------------------------------


@STOPS
async def test_serve_stops_its_runtime_and_removes_its_files_on_a_signal_with_128_plus_signum(
    signum: signal.Signals, anyio_backend: str, tmp_path: Path
) -> None:
    argv = [*CLI, "serve", "--scripted", "--backend", anyio_backend]
    with anyio.fail_after(60):
        code, stderr, scratch = await stop_with(argv, "attach:", signum, tmp_path)
    assert code == 128 + signum, stderr
    assert list(scratch.iterdir()) == []  # the token file and the scripted CODEX_HOME


@STOPS
async def test_the_demo_stops_its_turn_runtime_and_model_on_a_signal_with_128_plus_signum(
    signum: signal.Signals, anyio_backend: str, tmp_path: Path
) -> None:
    argv = [*CLI, "demo", "--backend", anyio_backend]
    with anyio.fail_after(60):
        # Mid-turn: the scripted model is streaming the first reply.
        code, stderr, scratch = await stop_with(argv, "Structured concurrency", signum, tmp_path)
    assert code == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert list(scratch.iterdir()) == []


async def test_a_second_signal_during_the_clean_up_leaves_nothing_behind_either(
    anyio_backend: str, tmp_path: Path
) -> None:
    argv = [*CLI, "serve", "--scripted", "--backend", anyio_backend]
    with anyio.fail_after(60), no_leftovers(tmp_path) as (env, pids, scratch):
        async with await anyio.open_process(argv, env=env, stderr=subprocess.DEVNULL) as process:
            pids.append(process.pid)
            await read_until(process, "attach:")
            process.send_signal(signal.SIGTERM)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 143
    assert list(scratch.iterdir()) == []


# -- item 5: one-line errors -------------------------------------------------------------------


def run_cli(argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


@requires_netns
def test_a_live_demo_without_a_login_is_one_line_naming_codex_anyio_login(tmp_path: Path) -> None:
    env = {**os.environ, "CODEX_HOME": str(offline_home(tmp_path / "home"))}
    done = run_cli(offline("demo", "--live"), env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("codex-anyio demo: the Codex runtime has no credentials")
    assert "`codex-anyio login`" in line

    verbose = run_cli(offline("demo", "--live", "-v"), env=env, stdin=subprocess.DEVNULL)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert "CredentialsMissingError" in verbose.stderr
    assert verbose.stderr.splitlines()[-1] == line


@requires_netns
def test_a_runtime_that_will_not_start_is_one_line_with_its_own_reason(tmp_path: Path) -> None:
    home = tmp_path / "a-file"
    home.write_text("")
    env = {**os.environ, "CODEX_HOME": str(home)}
    runs = [("demo", ["demo", "--live"]), ("logout", ["logout"]), ("logout", ["-v", "logout"])]
    for command, argv in runs:
        done = run_cli(offline(*argv), env=env, stdin=subprocess.DEVNULL)
        assert done.returncode == 1, done.stderr
        line = done.stderr.splitlines()[-1]
        assert line.startswith(f"codex-anyio {command}: the app-server")
        assert line.endswith("but that path is not a directory")  # the runtime's "Error: ..."
        assert ("Traceback" in done.stderr) == ("-v" in argv)


def test_a_missing_runtime_executable_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-codex"
    done = run_cli([*CLI, "login", "status", "--codex-bin", str(missing)])
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("codex-anyio login: ")
    assert str(missing) in line


# -- item 6: login, login status, logout -------------------------------------------------------


@requires_netns
def test_an_api_key_from_stdin_logs_in_status_shows_it_and_logout_forgets_it(
    tmp_path: Path,
) -> None:
    home = offline_home(tmp_path / "home")
    env = {**os.environ, "CODEX_HOME": str(home)}

    done = run_cli(offline("login", "--api-key-stdin"), env=env, input=KEY + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("logged in with an API key")
    assert (home / "auth.json").exists()

    status = run_cli(offline("login", "status"), env=env, stdin=subprocess.DEVNULL)
    assert (status.returncode, status.stdout.split(" (")[0]) == (0, "logged in with an API key")
    assert str(home) in status.stdout

    out = run_cli(offline("logout"), env=env, stdin=subprocess.DEVNULL)
    assert (out.returncode, out.stdout) == (0, "logged out\n")
    status = run_cli(offline("login", "status"), env=env, stdin=subprocess.DEVNULL)
    assert status.returncode == 1
    assert status.stdout.startswith("not logged in")
    for printed in (done, status, out):
        assert KEY not in printed.stdout + printed.stderr


@requires_netns
def test_an_api_key_from_a_named_variable_logs_in_under_codex_home_option(
    tmp_path: Path,
) -> None:
    home = offline_home(tmp_path / "elsewhere")
    env = {**os.environ, "MY_OPENAI_KEY": KEY}
    env.pop("CODEX_HOME", None)
    argv = offline("login", "--api-key-env", "MY_OPENAI_KEY", "--codex-home", str(home))
    done = run_cli(argv, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert KEY not in done.stdout + done.stderr
    assert KEY not in " ".join(argv)
    status = run_cli(offline("login", "status", "--codex-home", str(home)), env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.startswith("logged in with an API key")


@pytest.mark.parametrize(
    ("argv", "stdin", "says"),
    [
        (["login", "--api-key-env", "CODEX_ANYIO_TEST_UNSET"], "", "CODEX_ANYIO_TEST_UNSET"),
        (["login", "--api-key-stdin"], "", "no API key on stdin"),
        (["login", "--api-key-stdin"], "two words\n", "one API key"),
        (["login", "status", "--chatgpt"], "", "takes no login option"),
        (["login", "--chatgpt", "--device-code"], "", "not allowed with argument"),
        (["login", "--timeout", "0"], "", "positive number of seconds"),
        (["login", "whoami"], "", "invalid choice"),
    ],
)
def test_login_refuses_bad_arguments_in_one_line_with_status_2_starting_nothing(
    argv: list[str], stdin: str, says: str, tmp_path: Path
) -> None:
    env = {**os.environ, "CODEX_HOME": str(tmp_path / "home")}
    env.pop("CODEX_ANYIO_TEST_UNSET", None)
    done = run_cli([*CLI, *argv], env=env, input=stdin)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("codex-anyio login")
    assert says in line
    assert not (tmp_path / "home").exists()  # no runtime was started


@requires_netns
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
async def test_a_browser_login_prints_the_url_and_a_signal_cancels_it(
    signum: signal.Signals, tmp_path: Path
) -> None:
    home = offline_home(tmp_path / "home")
    argv = offline("login", "--chatgpt", "--codex-home", str(home))
    with anyio.fail_after(60):
        code, stderr, _ = await stop_with(argv, "https://auth.openai.com/", signum, tmp_path)
    assert code == 128 + signum, stderr
    assert stderr.splitlines() == ["codex-anyio login: the login was cancelled"]
    assert not (home / "auth.json").exists()


def fake_codex(tmp_path: Path, script: str) -> Path:
    """A ``codex`` executable (for ``--codex-bin``) that runs the fake app-server ``script``."""
    (tmp_path / "script.py").write_text(script, encoding="utf-8")
    codex = tmp_path / "codex"
    codex.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_SERVER}" "{tmp_path}/script.py"\n')
    codex.chmod(0o755)
    return codex


DEVICE_CODE = """
handshake()
start = expect("account/login/start")
assert start["params"] == {"type": "chatgptDeviceCode"}, start
reply(start, {"type": "chatgptDeviceCode", "loginId": "login-7",
              "verificationUrl": "https://auth.example.invalid/device", "userCode": "WXYZ-1234"})
cancel = expect("account/login/cancel")
with open(RECORD, "w") as f:
    json.dump(cancel["params"], f)
reply(cancel, {"status": "canceled"})
notify("account/login/completed", {"loginId": "login-7", "success": False, "error": "canceled"})
hold()
"""


async def test_a_device_code_login_prints_code_and_url_and_ctrl_c_cancels_it(
    tmp_path: Path,
) -> None:
    record = tmp_path / "cancelled.json"
    codex = fake_codex(tmp_path, f"RECORD = {str(record)!r}\n" + DEVICE_CODE)
    argv = [*CLI, "login", "--device-code", "--codex-bin", str(codex)]
    with anyio.fail_after(30):
        code, stderr, _ = await stop_with(argv, "WXYZ-1234", signal.SIGINT, tmp_path)
    assert code == 130, stderr
    assert json.loads(record.read_text()) == {"loginId": "login-7"}
    assert stderr.splitlines() == ["codex-anyio login: the login was cancelled"]


def test_a_device_code_login_that_does_not_complete_in_time_is_cancelled_with_status_1(
    tmp_path: Path,
) -> None:
    record = tmp_path / "cancelled.json"
    codex = fake_codex(tmp_path, f"RECORD = {str(record)!r}\n" + DEVICE_CODE)
    argv = [*CLI, "login", "--device-code", "--timeout", "0.5", "--codex-bin", str(codex)]
    done = run_cli(argv, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr
    assert "open https://auth.example.invalid/device" in done.stdout
    assert done.stderr.splitlines() == [
        "codex-anyio login: the login did not complete within 0.5 s; it was cancelled"
    ]
    assert json.loads(record.read_text()) == {"loginId": "login-7"}


BROWSER_SUCCESS = """
handshake()
start = expect("account/login/start")
assert start["params"] == {"type": "chatgpt"}, start
reply(start, {"type": "chatgpt", "loginId": "login-8",
              "authUrl": "https://auth.example.invalid/oauth?state=s"})
notify("account/login/completed", {"loginId": "login-8", "success": True})
reply(expect("account/read"), {"requiresOpenaiAuth": True, "account": {
    "type": "chatgpt", "email": "ada@example.invalid", "planType": "plus"}})
hold()
"""


def test_a_completed_browser_login_prints_the_url_then_who_is_logged_in(tmp_path: Path) -> None:
    codex = fake_codex(tmp_path, BROWSER_SUCCESS)
    done = run_cli([*CLI, "login", "--codex-bin", str(codex)], stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "https://auth.example.invalid/oauth?state=s" in lines
    assert lines[-1] == (
        "logged in with ChatGPT as ada@example.invalid (plus plan) "
        "(CODEX_HOME /tmp/fake-codex-home)"
    )
