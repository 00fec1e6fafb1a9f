"""A throwaway ``CODEX_HOME`` that points the runtime at a :class:`ScriptedModel`, and the
environment that keeps such a runtime hermetic (its own ``HOME`` included).

Every harness of the testing kit (:func:`open_scripted_codex`, :func:`open_scripted_pool`,
:func:`open_gateway_codex`, :func:`scripted_runtime`) sets its runtime up through
:func:`scratch_root` and :func:`runtime_config`, so they all get the same hermetic
environment, the same minimal trust store and the same folders.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._wire._config import CodexConfig

__all__ = [
    "QUIET_TRUST_STORE_LOGS",
    "empty_home",
    "runtime_config",
    "scratch_root",
    "scripted_env",
    "write_codex_home",
]


def write_codex_home(
    path: str | os.PathLike[str],
    *,
    base_url: str,
    approval_policy: str = "never",
    sandbox_mode: str = "read-only",
    model: str = "mock-model",
    extra_config: str = "",
    shell_snapshot: bool = False,
) -> Path:
    """Write ``config.toml`` for a custom ``mock`` provider at ``base_url``; return the folder.

    Retries are off (a scripted failure must surface, not be retried into the next reply), and
    the plugin and app features are off: at start-up they would try to reach the network.
    The shell snapshot is off unless ``shell_snapshot``: with it, every new thread runs a login
    shell through the machine's rc files and its first turn waits for it (up to 10 s), so a
    slow or lock-taking rc file (pyenv's ``rehash``) would make tests slow and flaky.
    """
    home = Path(path)
    home.mkdir(parents=True, exist_ok=True)
    config = f"""\
model = "{model}"
model_provider = "mock"
approval_policy = "{approval_policy}"
sandbox_mode = "{sandbox_mode}"

[features]
plugins = false
remote_plugin = false
apps = false
shell_snapshot = {"true" if shell_snapshot else "false"}

[model_providers.mock]
name = "mock"
base_url = "{base_url}"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"""
    if extra_config:
        config += "\n" + extra_config.strip() + "\n"
    (home / "config.toml").write_text(config, encoding="utf-8")
    return home


QUIET_TRUST_STORE_LOGS = (
    "codex_http_client::custom_ca=error,codex_http_client::client_builder=error,"
    "codex_otel.log_only=error"
)
"""``RUST_LOG`` directives that silence the three warnings the runtime logs for every turn
when its trust store holds no certificate (``CodexConfig(trust_store="minimal")``): "failed to
load custom CA bundle", "fell back to system root certificates", "failed to build HTTP client
with custom CA". Harmless, but they would fill the stderr tail an error shows."""


def scripted_env(
    codex_home: str | os.PathLike[str], *, home: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """Environment for a hermetic runtime: its home, no managed config, quiet logs (warnings,
    but not those of an empty trust store: :data:`QUIET_TRUST_STORE_LOGS`), and a ``HOME`` of
    its own.

    ``HOME`` matters because the runtime runs every command the model asks for (and each
    shell snapshot) as a login shell, ``bash -lc``, which sources the rc files of ``HOME``: a
    slow or lock-taking one (pyenv's ``rehash``) stalls every scripted command for the
    runtime's 10 s and the test passes with the command unfinished, and whatever the rc files
    print ends up in the command's output. ``home`` is the folder to use instead (default:
    ``codex_home``, which holds no rc file); pass the user's own (``home=Path.home()``) to
    run commands as the user's shell would.
    """
    return {
        "CODEX_HOME": os.fspath(codex_home),
        "CODEX_APP_SERVER_DISABLE_MANAGED_CONFIG": "1",
        "RUST_LOG": f"warn,{QUIET_TRUST_STORE_LOGS}",
        "HOME": os.fspath(codex_home if home is None else home),
    }


def empty_home(root: str | os.PathLike[str], home: str | os.PathLike[str] | None = None) -> Path:
    """The ``HOME`` a scripted runtime under ``root`` gets: ``home`` if given, else a new empty
    folder ``root/home`` (see :func:`scripted_env` for why the user's own is not used)."""
    if home is not None:
        return Path(home)
    folder = Path(root) / "home"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def scratch_root(directory: str | os.PathLike[str] | None) -> Iterator[tuple[Path, Path]]:
    r"""``(root, scratch)``: where a harness puts its ``CODEX_HOME``\s, ``workspace`` (made
    here) and ``home`` (``directory``, or a new temporary folder removed afterwards), and a
    short temporary folder in any case (a unix socket path must stay under ~100 bytes; a
    test's ``tmp_path`` may not)."""
    with tempfile.TemporaryDirectory(prefix="codex-anyio-") as scratch:
        root = Path(directory) if directory is not None else Path(scratch)
        (root / "workspace").mkdir(parents=True, exist_ok=True)
        yield root, Path(scratch)


def runtime_config(
    root: Path,
    codex_home: Path,
    *,
    base_url: str,
    approval_policy: str,
    sandbox_mode: str,
    extra_config: str,
    trust_store: str | os.PathLike[str],
    home: str | os.PathLike[str] | None,
    **config: Any,
) -> CodexConfig:
    """Write ``codex_home`` for the model at ``base_url`` (:func:`write_codex_home`) and return
    the :class:`CodexConfig` of a hermetic runtime using it: working in ``root/workspace``,
    with the environment of :func:`scripted_env` (``HOME``: :func:`empty_home`), the given
    ``trust_store`` and any other ``CodexConfig`` fields (``command``, opt-outs, ...)."""
    write_codex_home(
        codex_home,
        base_url=base_url,
        approval_policy=approval_policy,
        sandbox_mode=sandbox_mode,
        extra_config=extra_config,
    )
    env: Mapping[str, str] = scripted_env(codex_home, home=empty_home(root, home))
    return CodexConfig(
        cwd=root / "workspace",
        env=env,
        codex_home=codex_home,
        trust_store=trust_store,
        **config,
    )
