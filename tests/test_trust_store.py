"""The runtime's TLS trust store (``CodexConfig.trust_store``): the scripted harness gives its
runtime none (its model is plain HTTP on loopback), the agent's commands keep theirs, and a
bundle that is not a file is a clear start-up error."""

from __future__ import annotations

import os
import ssl
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_anyio import AsyncCodex, CodexConfig, StartupError
from codex_anyio.testing import function_call, message, open_scripted_codex, open_scripted_pool

pytestmark = pytest.mark.anyio

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/PID/environ"
)


def environ_of(pid: int) -> dict[str, str]:
    """The environment a process was started with (Linux)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {key.decode(): value.decode() for key, value in pairs}


def runtime_pid(codex: AsyncCodex) -> int:
    pid: int = codex.client._transport.pid  # type: ignore[attr-defined]
    return pid


def trust_variables(env: dict[str, str]) -> dict[str, str | None]:
    return {name: env.get(name) for name in ("SSL_CERT_FILE", "SSL_CERT_DIR")}


@linux_only
async def test_the_scripted_runtime_gets_the_minimal_trust_store_and_its_turns_complete() -> None:
    with anyio.fail_after(60):
        async with open_scripted_codex([message("ok")]) as s:
            env = environ_of(runtime_pid(s.codex))
            thread = await s.codex.thread_start()
            result = await thread.run("hi")
    assert trust_variables(env) == {"SSL_CERT_FILE": os.devnull, "SSL_CERT_DIR": os.devnull}
    assert (result.status, result.final_response) == ("completed", "ok")


@linux_only
async def test_every_scripted_pool_member_gets_the_minimal_trust_store() -> None:
    with anyio.fail_after(60):
        async with open_scripted_pool(lambda request: message("ok"), servers=2) as s:
            pids = s.pool.member_pids()
            envs = [environ_of(pid) for pid in pids if pid is not None]
            result = await s.pool.run("hi")
    assert len(envs) == 2
    for env in envs:
        assert trust_variables(env) == {"SSL_CERT_FILE": os.devnull, "SSL_CERT_DIR": os.devnull}
    assert result.final_response == "ok"


@linux_only
async def test_a_system_trust_store_leaves_the_runtime_this_process_s_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "roots.pem"
    bundle.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with anyio.fail_after(60):
        async with open_scripted_codex([], trust_store="system") as s:
            env = environ_of(runtime_pid(s.codex))
    assert trust_variables(env) == {"SSL_CERT_FILE": str(bundle), "SSL_CERT_DIR": None}


async def test_the_agents_commands_keep_the_trust_store_they_would_have_had(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The runtime's commands inherit its environment: without the restore they would get the
    empty store too, and pip, git or curl in a command would fail every certificate."""
    bundle = tmp_path / "roots.pem"
    bundle.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    show = "env | grep '^SSL_CERT_' | sort"
    script: list[Any] = [
        function_call("exec_command", {"cmd": show, "login": False}),
        message("done"),
    ]
    with anyio.fail_after(60):
        async with open_scripted_codex(script) as s:
            thread = await s.codex.thread_start()
            result = await thread.run("show the trust store")
    outputs = [item.aggregated_output for item in result.items if item.type == "commandExecution"]
    default_dir = ssl.get_default_verify_paths().openssl_capath
    assert outputs == [f"SSL_CERT_DIR={default_dir}\nSSL_CERT_FILE={bundle}\n"]


def test_a_bundle_is_the_only_file_the_runtime_trusts_and_system_adds_nothing(
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "roots.pem"
    relative = os.path.relpath(bundle)
    env = CodexConfig(trust_store=relative, env={"SSL_CERT_DIR": "/x"}).environment()
    assert trust_variables(env) == {"SSL_CERT_FILE": str(bundle), "SSL_CERT_DIR": os.devnull}
    system = CodexConfig(env={"SSL_CERT_FILE": "/a", "SSL_CERT_DIR": "/b"}).environment()
    assert trust_variables(system) == {"SSL_CERT_FILE": "/a", "SSL_CERT_DIR": "/b"}
    assert not any("shell_environment_policy" in arg for arg in CodexConfig().argv())


@pytest.mark.parametrize("value", ["", None, 3])
def test_a_trust_store_that_is_neither_a_mode_nor_a_path_is_a_value_error(value: Any) -> None:
    with pytest.raises(ValueError, match="trust_store must be"):
        CodexConfig(trust_store=value)


async def test_a_trust_store_that_is_not_a_file_fails_start_up_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with anyio.fail_after(10), pytest.raises(StartupError, match=r"missing\.pem"):
        async with AsyncCodex(CodexConfig(trust_store=missing)):
            pass  # pragma: no cover
