"""A sandbox per task: how a task's runtime is started, and its sandbox ended afterwards.

A batch (``--sandbox TEMPLATE``, ``--container IMAGE``, ``run_batch(sandbox=...)``) or one
task line (``"sandbox"``, ``"container"``) may say that the task's runtime runs in a sandbox
of its own. Such a task gets a runtime of its own too (a one-member pool started for it,
:class:`~codex_anyio.CodexConfig` ``command`` set), and the batch's shared pool serves only
the tasks without one; the default path is untouched.

- **A command template** is split like a shell line once (``shlex``), and only then are the
  placeholders ``{id}``, ``{cwd}``, ``{runtime}`` (the bundled ``codex``, see
  :func:`~codex_anyio.runtime_path`) and ``{codex_home}`` substituted, each inside the one
  argument that holds it: a task id with spaces, quotes or ``;`` stays one argument and
  can never add one. ``{{`` and ``}}`` are literal braces; any other placeholder is refused
  where the template is given.
- **A container** (docker or podman) is started per task, detached and kept alive by
  ``sleep infinity``, with the bundled runtime mounted read-only at
  :data:`CONTAINER_RUNTIME` (a static executable: the image needs no ``codex``); the runtime
  runs in it with ``exec -i``, given the client's variables by name (``-e NAME``: the values
  never appear on a command line), and the container is removed (``rm -f``) when the task
  ends however it ends, shielded and bounded, which ends every process in it.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import attrs

from .._exceptions import StartupError
from .._redact import redact_text
from .._wire._config import CodexConfig, runtime_path
from .._wire._transport import run_stop_command

__all__ = [
    "CONTAINER_RUNTIME",
    "ENGINES",
    "SandboxSpec",
    "batch_spec",
    "check_task_sandbox",
    "check_template",
    "container_argv",
    "render_template",
    "sandbox_runtime",
    "spec_of",
]

PLACEHOLDERS: Final = ("id", "cwd", "runtime", "codex_home")
"""What a command template may name: the task's id, its ``cwd``, the bundled runtime, and the
runtime's ``CODEX_HOME`` (a sandbox with a read-only root must let it write there)."""

ENGINES: Final = ("docker", "podman")
"""Container engines ``--container`` drives (their ``run``/``exec``/``rm`` agree)."""

CONTAINER_RUNTIME: Final = "/opt/codex-anyio/codex"
"""Where the bundled runtime is mounted (read-only) in a task's container."""

CONTAINER_START_TIMEOUT: Final = 300.0
"""Seconds ``docker run -d`` gets: long enough to pull an image, bounded all the same."""

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")


def check_template(
    template: str | Sequence[str], what: str = "the sandbox template"
) -> tuple[str, ...]:
    """A command template as its arguments, checked: split once if it is a string, and every
    placeholder one of :data:`PLACEHOLDERS`.

    :raises ValueError: naming ``what`` and the problem (bad quoting, an unknown placeholder,
        an empty template).
    """
    if isinstance(template, str):
        try:
            parts = tuple(shlex.split(template))
        except ValueError as exc:
            raise ValueError(f"{what} {template!r} cannot be split: {exc}") from None
    elif isinstance(template, Sequence) and all(isinstance(p, str) for p in template):
        parts = tuple(template)
    else:
        raise ValueError(f"{what} must be a string or a list of strings, not {template!r}")
    if not parts:
        raise ValueError(f"{what} is empty: it is the command that starts the app-server")
    dummy = dict.fromkeys(PLACEHOLDERS, "")
    for part in parts:
        try:
            part.format(**dummy)
        except KeyError as exc:
            raise ValueError(
                f"{what}: unknown placeholder {{{exc.args[0]}}} in {part!r} "
                f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}; {{{{ for a brace)"
            ) from None
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{what}: {part!r}: {exc} ({{{{ and }}}} for braces)") from None
    return parts


def render_template(
    template: Sequence[str], *, task_id: str, cwd: str | None, codex_home: str
) -> list[str]:
    """The command of one task: each argument of the (already split) ``template`` with the
    placeholders filled in, so a value lands inside its argument, never beside it."""
    values = {
        "id": task_id,
        "cwd": cwd if cwd is not None else os.getcwd(),
        "runtime": os.fspath(runtime_path()),
        "codex_home": codex_home,
    }
    return [part.format(**values) for part in template]


@attrs.frozen(kw_only=True)
class SandboxSpec:
    """How a task's runtime is started: a command template, or a container image."""

    template: tuple[str, ...] | None = None
    image: str | None = None
    engine: str = "docker"
    container_options: tuple[str, ...] = ()
    """More ``run`` arguments for every container (``--network=host``, ``-v``, ...)."""

    def describe(self) -> str:
        if self.image is not None:
            return f"a {self.engine} container of {self.image}"
        return redact_text(shlex.join(self.template or ()))


def spec_of(
    task_sandbox: Any, task_container: Any, batch: SandboxSpec | None
) -> tuple[SandboxSpec | None, bool]:
    """The sandbox a task runs in, and whether the task itself named it (its own line wins
    over the batch's); the task's fields were checked by ``check_task``."""
    if task_container is not None:
        base = batch or SandboxSpec()
        return attrs.evolve(base, template=None, image=task_container), True
    if task_sandbox is not None:
        return SandboxSpec(template=check_template(task_sandbox, "'sandbox'")), True
    return batch, False


def container_name(task_id: str) -> str:
    """A name for a task's container: recognisable in ``docker ps``, unique per attempt."""
    slug = _NAME_UNSAFE.sub("-", task_id).strip("-.")[:40]
    return f"codex-anyio-{slug + '-' if slug else ''}{secrets.token_hex(4)}"


def forwarded_names(config: CodexConfig) -> list[str]:
    """The variables the client sets for its runtime (``env``, ``codex_home``), which a
    container's ``exec`` gets by name."""
    names = list(config.env or {})
    if config.codex_home is not None and "CODEX_HOME" not in names:
        names.append("CODEX_HOME")
    return names


def container_argv(
    spec: SandboxSpec, name: str, config: CodexConfig, *, cwd: str | None
) -> tuple[list[str], list[str], list[str]]:
    """The three command lines of a task's container: start it, run the runtime in it on
    stdio, remove it. The client's ``CODEX_HOME`` (a folder of this machine: the scripted
    model's, a login) is mounted at the same path; ``cwd`` is a path in the container."""
    assert spec.image is not None
    engine = spec.engine
    run = [engine, "run", "-d", "--rm", "--init", "--name", name]
    run += ["-v", f"{os.fspath(runtime_path())}:{CONTAINER_RUNTIME}:ro"]
    codex_home = config.codex_home or (config.env or {}).get("CODEX_HOME")
    if codex_home is not None:  # (without one, the container's own ~/.codex is used)
        home = os.fspath(codex_home)
        run += ["-v", f"{home}:{home}"]
    run += [*spec.container_options, spec.image, "sleep", "infinity"]
    exec_ = [engine, "exec", "-i"]
    for variable in forwarded_names(config):
        exec_ += ["-e", variable]
    if cwd is not None:
        exec_ += ["-w", cwd]
    exec_ += [name, CONTAINER_RUNTIME, "app-server"]
    return run, exec_, [engine, "rm", "-f", name]


async def _start_container(argv: list[str], config: CodexConfig, spec: SandboxSpec) -> None:
    """``docker run -d``: bounded; a failure is a :class:`StartupError` naming the command
    and what the engine said."""
    shown = redact_text(shlex.join(argv))
    try:
        with anyio.fail_after(CONTAINER_START_TIMEOUT):
            result = await anyio.run_process(
                argv, stdin=subprocess.DEVNULL, env=config.environment(), check=False
            )
    except TimeoutError:
        raise StartupError(
            f"{spec.describe()} did not start within {CONTAINER_START_TIMEOUT:g} s (`{shown}`)"
        ) from None
    except OSError as exc:
        raise StartupError(f"could not start {spec.describe()} (`{shown}`): {exc}") from None
    if result.returncode:
        raise StartupError(
            f"could not start {spec.describe()} (`{shown}`)",
            returncode=result.returncode,
            stderr_tail=result.stderr.decode("utf-8", "replace")[-4096:],
        )


async def _remove(argv: list[str], config: CodexConfig) -> None:
    """``docker rm -f``: shielded and bounded (it runs while the task is being cancelled)."""
    await run_stop_command(attrs.evolve(config, command=None, stop_command=argv))


@asynccontextmanager
async def sandbox_runtime(
    spec: SandboxSpec, base: CodexConfig, *, task_id: str, cwd: str | None
) -> AsyncIterator[CodexConfig]:
    """The launch settings of one task's runtime in its sandbox, for as long as the block
    runs: ``base`` with ``command`` set; for a container, the container too (started before,
    removed after, however the block ends)."""
    if spec.image is None:
        assert spec.template is not None
        command = render_template(spec.template, task_id=task_id, cwd=cwd, codex_home=base.home())
        yield attrs.evolve(base, command=command)
        return
    name = container_name(task_id)
    run, exec_, remove = container_argv(spec, name, base, cwd=cwd)
    try:
        await _start_container(run, base, spec)
        yield attrs.evolve(base, command=exec_)
    finally:
        await _remove(remove, base)


def batch_spec(
    sandbox: str | Sequence[str] | None,
    container: str | None,
    engine: str,
    container_options: Sequence[str],
) -> SandboxSpec | None:
    """The batch-wide sandbox of ``run_batch`` (checked at once: a bad template is a
    ``ValueError`` before anything runs)."""
    if sandbox is not None and container is not None:
        raise ValueError("a batch runs its tasks in a sandbox template or a container, not both")
    if engine not in ENGINES:
        raise ValueError(f"the container engine is one of {list(ENGINES)}, not {engine!r}")
    options = tuple(container_options)
    if container is not None:
        return SandboxSpec(image=container, engine=engine, container_options=options)
    if sandbox is not None:
        return SandboxSpec(template=check_template(sandbox), engine=engine)
    return None


def check_task_sandbox(sandbox: Any, container: Any) -> None:
    """A task's ``sandbox`` and ``container`` fields (for ``check_task``).

    :raises ValueError: naming the field.
    """
    if sandbox is not None and container is not None:
        raise ValueError("'sandbox' and 'container' name two ways to run the task: give one")
    if sandbox is not None:
        check_template(sandbox, "'sandbox'")
    if container is not None and (not isinstance(container, str) or not container):
        raise ValueError(f"'container' must be an image name, not {container!r}")
