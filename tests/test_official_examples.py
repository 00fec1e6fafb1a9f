"""The official SDK's examples 01-16, ported by changing only their ``openai_codex`` imports,
run offline against the real runtime and the scripted model: the async ports on both AnyIO
backends, the sync ports on the sync ``Codex``.

The ports live in ``tests/official_examples/`` (``exNN_<name>_{sync,async}.py``); their
``_bootstrap.runtime_config()`` returns the scripted runtime's config, as the official one
returns a config for a real runtime. The ports follow the 0.163.0 release's API
(``result.final_response``, ``result.id``, ``approval_mode=``), not older example revisions.
Example 16 (goal turns) is written for the official SDK's next API, ``thread.run(prompt,
goal=True)`` returning the goal's result.
Example 04 (models and metadata) is not in the stored upstream tree; ours follows its
README description. Example 07's remote image URL is a ``data:`` URL: tests stay on loopback.
"""

from __future__ import annotations

import io
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_anyio import CodexConfig
from codex_anyio.testing import (
    RecordedRequest,
    Reply,
    ScriptedModel,
    function_call,
    message,
    scripted_env,
    scripted_runtime,
    write_codex_home,
)

pytestmark = pytest.mark.anyio

PORTS = Path(__file__).with_name("official_examples")


def always(text: str) -> Callable[[RecordedRequest], Reply]:
    """A script for examples whose number of model requests depends on timing."""
    return lambda request: message(text, deltas=2)


SCRIPTS: dict[str, Any] = {
    "ex01_quickstart_constructor": [message("Hello from the scripted model.")],
    "ex02_turn_run": [message("- lanes\n- vectors\n- throughput", deltas=3)],
    "ex03_turn_stream_events": always("1, 2, 3. Counting is easy."),
    "ex04_models_and_metadata": [],
    "ex05_existing_thread": [message("Saturn has rings."), message("It has many moons.")],
    "ex06_thread_lifecycle_and_controls": always("A short sentence."),
    "ex07_image_and_text": [message("- a square\n- one pixel\n- blue")],
    "ex08_local_image_and_text": [message("- a small image\n- grey")],
    "ex09_async_parity": [message("  Hello there.  ")],
    "ex10_error_handling_and_retry": [message("Back off, add jitter, cap attempts.")],
    "ex11_cli_mini_app": [message("Hi, human.", deltas=2)],
    "ex12_turn_params_kitchen_sink": always('{"summary": "roll out slowly", "actions": []}'),
    "ex13_model_select_and_turn_params": always('{"summary": "canary", "actions": []}'),
    "ex14_turn_controls": always("1, 2, 3, 4, 5, 6, 7, 8, 9, 10. Done."),
    "ex15_login_and_account": [],
    "ex16_goal_turns": lambda request: (
        message("Coverage improved.")
        if request.function_call_outputs()
        else function_call("update_goal", {"status": "complete"})
    ),
}
EXPECTED: dict[str, list[str]] = {
    "ex01_quickstart_constructor": [
        "Server: codex_anyio 0.163.0",
        "Status: completed",
        "Text: Hello from the scripted model.",
    ],
    "ex02_turn_run": ["status: completed", "text: - lanes", "usage.total_tokens: 15"],
    "ex03_turn_stream_events": ["events.count:"],
    "ex04_models_and_metadata": ["server.name: codex_anyio", "server.version: 0.163.0"],
    "ex05_existing_thread": ["Created thread:", "It has many moons."],
    "ex06_thread_lifecycle_and_controls": [
        "Lifecycle OK:",
        "read.turns: 2",
        "list.archived: 1",
        "compact: sent",
    ],
    "ex07_image_and_text": ["Status: completed", "- a square"],
    "ex08_local_image_and_text": ["Status: completed", "- a small image"],
    "ex09_async_parity": ["Server: codex_anyio", "Text: Hello there."],
    "ex10_error_handling_and_retry": ["Text: Back off, add jitter, cap attempts."],
    "ex11_cli_mini_app": ["assistant> Hi, human.", "assistant.status> completed", "total=15"],
    "ex12_turn_params_kitchen_sink": ["Status: completed", "roll out slowly"],
    "ex13_model_select_and_turn_params": ["agent.message: {", "usage.params:"],
    "ex14_turn_controls": ["steer.final.status: completed", "interrupt.final.status:"],
    "ex15_login_and_account": [
        "login.auth_url: https://auth.openai.com/",
        "login.cancel.status: canceled",
        "login.completed.success: False",
    ],
    "ex16_goal_turns": ["Coverage improved."],
}
XFAIL: dict[str, str] = {}
STDIN = {"ex11_cli_mini_app": "hello\n/exit\n"}


def ports(kind: str) -> list[Any]:
    params = []
    for path in sorted(PORTS.glob(f"ex*_{kind}.py")):
        name = path.name.removesuffix(f"_{kind}.py")
        marks = [pytest.mark.xfail(strict=True, reason=XFAIL[name])] if name in XFAIL else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture
def bootstrap(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The ports' ``_bootstrap`` module, importable as the official examples import it."""
    monkeypatch.syspath_prepend(str(PORTS))
    import _bootstrap

    yield _bootstrap
    _bootstrap.CONFIG = None


def login_config(config: CodexConfig) -> CodexConfig:
    """Example 15 talks to the login machinery: run the runtime in a network namespace of its
    own where the system allows it (``unshare -rn``), so nothing can leave the machine and the
    browser login's localhost port cannot collide with a concurrent run."""
    unshare = shutil.which("unshare")
    if unshare is None:  # pragma: no cover - depends on the host
        return config
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True)
    if probe.returncode != 0:  # pragma: no cover - depends on the host
        return config
    argv = [unshare, "-rn", str(config.resolve_bin()), "app-server", "--listen", "stdio://"]
    return CodexConfig(
        launch_args_override=argv, cwd=config.cwd, env=config.env, codex_home=config.codex_home
    )


def test_every_port_has_a_script_and_expectations() -> None:
    names = {p.name.rsplit("_", 1)[0] for p in PORTS.glob("ex*.py")}
    assert names == set(SCRIPTS) == set(EXPECTED)
    assert len(names) == 16


@pytest.mark.parametrize("name", ports("async"))
async def test_async_port_runs_with_only_the_import_changed(
    name: str,
    anyio_backend: str,
    bootstrap: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if name == "ex11_cli_mini_app" and anyio_backend == "trio":
        pytest.skip("the official example itself reads stdin with asyncio.to_thread")
    monkeypatch.setattr(sys, "stdin", io.StringIO(STDIN.get(name, "")))
    monkeypatch.chdir(tmp_path)
    with anyio.fail_after(90):
        async with ScriptedModel(SCRIPTS[name]) as model:
            home = write_codex_home(tmp_path / "codex-home", base_url=model.base_url)
            config = CodexConfig(cwd=tmp_path, env=scripted_env(home), codex_home=home)
            if name == "ex15_login_and_account":
                config = login_config(config)
            bootstrap.CONFIG = config
            namespace = runpy.run_path(str(PORTS / f"{name}_async.py"), run_name="port")
            await namespace["main"]()
    out = capsys.readouterr().out
    for expected in EXPECTED[name]:
        assert expected in out


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("name", ports("sync"))
def test_sync_port_runs_with_only_the_import_changed(
    name: str,
    backend: str,
    bootstrap: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(STDIN.get(name, "")))
    monkeypatch.chdir(tmp_path)
    with scripted_runtime(SCRIPTS[name], backend=backend, directory=tmp_path) as rt:
        config = rt.config
        if name == "ex15_login_and_account":
            config = login_config(config)
        bootstrap.CONFIG = config
        runpy.run_path(str(PORTS / f"{name}_sync.py"), run_name="__main__")
    out = capsys.readouterr().out
    for expected in EXPECTED[name]:
        assert expected in out
