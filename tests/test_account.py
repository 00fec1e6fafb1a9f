"""Login and account helpers against the real runtime, offline: the runtime runs in a network
namespace of its own (``unshare -rn``), so nothing it does can leave the machine.

API-key login writes ``auth.json`` and ``account()`` reflects it; the browser flow starts
(a localhost listener) and cancels cleanly; the device-code flow, which must reach the auth
server first, fails fast with a JSON-RPC error; with no credentials at all, starting a thread
raises ``CredentialsMissingError`` at once instead of a turn retrying for minutes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import pytest

from codex_anyio import (
    AsyncCodex,
    Codex,
    CodexConfig,
    CredentialsMissingError,
    JsonRpcError,
)
from codex_anyio.testing import scripted_env

from .conftest import offline_home, requires_netns

pytestmark = pytest.mark.anyio


def offline_config(home: Path) -> CodexConfig:
    """The bundled runtime with its default (OpenAI) provider, in a private network
    namespace, with an empty ``CODEX_HOME``: what a new machine without a login looks like.
    (Launched through ``unshare``, so the credentials check is off unless asked for.)"""
    offline_home(home)
    unshare = shutil.which("unshare")
    assert unshare is not None
    argv = [unshare, "-rn", str(CodexConfig().resolve_bin()), "app-server", "--listen", "stdio://"]
    return CodexConfig(launch_args_override=argv, cwd=home, env=scripted_env(home), codex_home=home)


@requires_netns
async def test_api_key_login_writes_auth_and_account_reflects_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with anyio.fail_after(60):
        async with AsyncCodex(offline_config(home)) as codex:
            before = await codex.account()
            assert before.requires_openai_auth
            assert before.account is None
            await codex.login_api_key("sk-test-not-a-real-key")
            after = await codex.account()
            assert after.account is not None
            assert after.account.type == "apiKey"
            assert (home / "auth.json").exists()
            await codex.logout()
            assert (await codex.account()).account is None


@requires_netns
async def test_starting_a_thread_without_credentials_fails_fast(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        config = offline_config(tmp_path / "home")
        async with AsyncCodex(config, require_credentials=True) as codex:
            with pytest.raises(CredentialsMissingError, match="`codex-anyio login`"):
                await codex.thread_start()
            await codex.login_api_key("sk-test-not-a-real-key")
            thread = await codex.thread_start()
            assert thread.id


@requires_netns
async def test_the_credentials_check_can_be_turned_off(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        config = offline_config(tmp_path / "home")
        async with AsyncCodex(config, require_credentials=False) as codex:
            assert (await codex.thread_start()).id


@requires_netns
async def test_browser_login_starts_and_cancels_cleanly(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with AsyncCodex(offline_config(tmp_path / "home")) as codex:
            login = await codex.login_chatgpt()
            assert login.auth_url.startswith("https://auth.openai.com/")
            assert (await login.cancel()).status == "canceled"
            outcome = await login.wait()
            assert (outcome.success, outcome.login_id) == (False, login.login_id)


@requires_netns
async def test_device_code_login_without_network_fails_fast_with_an_rpc_error(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(30):
        async with AsyncCodex(offline_config(tmp_path / "home")) as codex:
            with pytest.raises(JsonRpcError, match="device code"):
                await codex.login_chatgpt_device_code()


@requires_netns
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_sync_client_logs_in_and_cancels_a_browser_login(backend: str, tmp_path: Path) -> None:
    with Codex(offline_config(tmp_path / "home"), backend=backend) as codex:  # type: ignore[arg-type]
        codex.login_api_key("sk-test-not-a-real-key")
        assert codex.account().account is not None
        login = codex.login_chatgpt()
        assert login.cancel().status == "canceled"
        assert login.wait().success is False
