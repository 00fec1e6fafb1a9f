"""The ``codex-anyio`` command as a user meets it, in subprocesses: signals, errors, login.

- ``serve`` and ``demo`` stop everything they started on SIGINT, SIGTERM and SIGHUP alike
  (no process carrying the runtime's marker is left, the temporary files are gone) and exit
  with 128 + the signal's number, on both backends.
- An error is one line (``codex-anyio <command>: ...``) and status 1; ``-v`` adds the
  traceback.
- Commands that run the runtime with its default provider run in a network namespace of
  their own (``unshare -rn``: nothing can leave the machine).
"""

from __future__ import annotations

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

from .conftest import offline_home, processes_marked_by, requires_netns

pytestmark = pytest.mark.anyio

CLI = (sys.executable, "-m", "codex_anyio")

STOPS = pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name
)


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
def test_a_live_demo_without_a_login_is_one_line_naming_the_error(tmp_path: Path) -> None:
    env = {**os.environ, "CODEX_HOME": str(offline_home(tmp_path / "home"))}
    done = run_cli(offline("demo", "--live"), env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("codex-anyio demo: the Codex runtime has no credentials")
    assert "codex.login_api_key" in line

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
    runs = [("demo", ["demo", "--live"]), ("demo", ["-v", "demo", "--live"])]
    for command, argv in runs:
        done = run_cli(offline(*argv), env=env, stdin=subprocess.DEVNULL)
        assert done.returncode == 1, done.stderr
        line = done.stderr.splitlines()[-1]
        assert line.startswith(f"codex-anyio {command}: the app-server")
        assert line.endswith("but that path is not a directory")  # the runtime's "Error: ..."
        assert ("Traceback" in done.stderr) == ("-v" in argv)
