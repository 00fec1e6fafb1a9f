"""Starting a runtime that *others* attach to: ``codex app-server --listen ws://...|unix://...``.

This is the other half of ``_ws.py``: tests, demos and ``codex-anyio serve`` need a local
server on a socket, with a capability token, that outlives any one client. What it promises:
:func:`serve_app_server` returns only once the server answers (its ``/readyz`` says 200), with
the address it really listens on (``ws://127.0.0.1:0`` picks a free port; the runtime prints
the one it got), and leaving the block stops the server and everything it started, shielded
and bounded, as the stdio transport does for a spawned runtime.

It listens on loopback only unless told otherwise: the runtime runs commands for whoever
holds the token, so ``ws://0.0.0.0:PORT`` (every interface) or any other non-loopback address
is refused unless ``allow_remote=True`` (``--allow-remote``), and then only with a token file
of the caller's (``token_file=``), which remote clients must be given anyway.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc
import attrs

from .._exceptions import StartupError
from .._groups import replacement_for, reraise
from .._wire._address import Address
from .._wire._config import CodexConfig
from .._wire._reap import ProcessTreeReaper
from .._wire._transport import _StderrTail, open_runtime_process, run_stop_command

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["RunningServer", "check_listen", "serve_app_server"]

logger = logging.getLogger("codex_anyio.server")

TERMINATE_GRACE: Final = 3.0
"""Seconds a listening runtime gets to exit after SIGTERM before SIGKILL."""

_LISTENING = re.compile(r"listening on:\s*(\S+)")
_ANSI_TEXT = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


@attrs.frozen
class RunningServer:
    """A runtime listening on a socket: where, and the token file clients need."""

    url: str
    """``ws://127.0.0.1:PORT`` (the real port) or ``unix:///path``."""
    token_file: Path | None
    """The capability-token file (``ws://`` only): give it to clients as ``token_file``."""
    pid: int

    def client_config(self, **fields: Any) -> CodexConfig:
        """A :class:`CodexConfig` that attaches to this server (``fields`` added)."""
        return CodexConfig(connect=self.url, token_file=self.token_file, **fields)


def check_listen(
    listen: str,
    *,
    allow_remote: bool = False,
    token_file: str | os.PathLike[str] | None = None,
) -> str:
    """The scheme of a ``listen`` address we may serve on (``ws`` or ``unix``).

    :raises ValueError: another scheme, a host name (the runtime listens on ``ws://IP:PORT``),
        an address that is not loopback (``0.0.0.0``, ``[::]``, another interface's) without
        ``allow_remote``, or one with ``allow_remote`` but no ``token_file``. The message says
        which and what to pass.
    """
    scheme = listen.split(":", 1)[0].lower()
    if scheme == "unix":
        return scheme
    if scheme != "ws":
        raise ValueError(f"cannot serve on {listen!r}: use ws://127.0.0.1:PORT or unix://PATH")
    try:
        ip = ipaddress.ip_address(Address.parse(listen).host)
    except ValueError:
        raise ValueError(
            f"cannot serve on {listen!r}: the runtime listens on ws://IP:PORT "
            "(ws://127.0.0.1:PORT for this machine only)"
        ) from None
    if ip.is_loopback:
        return scheme
    host = str(ip)
    if not allow_remote:
        reach = "every interface" if host in ("0.0.0.0", "::") else "beyond this machine"
        raise ValueError(
            f"{listen} is not a loopback address: it would accept connections from "
            f"{reach}. Serve on ws://127.0.0.1:PORT, or pass allow_remote=True "
            "(--allow-remote) with your own token_file (--token-file) to mean it"
        )
    if token_file is None:
        raise ValueError(
            f"serving on {listen} (beyond loopback) needs a token of yours that remote clients "
            "are given: pass token_file= (--token-file)"
        )
    return scheme


@asynccontextmanager
async def serve_app_server(
    config: CodexConfig | None = None,
    listen: str = "ws://127.0.0.1:0",
    *,
    token_file: str | os.PathLike[str] | None = None,
    ready_timeout: float = 30.0,
    allow_remote: bool = False,
) -> AsyncIterator[RunningServer]:
    """Run ``codex app-server --listen LISTEN`` (launch settings from ``config``) until the
    block ends.

    :param listen: ``ws://127.0.0.1:PORT`` (port 0: any free port) or ``unix://PATH``.
    :param token_file: for ``ws://``: the token file to require (default: a new random token
        in a private temporary file, removed afterwards).
    :param ready_timeout: bound on the start-up, until ``/readyz`` answers 200.
    :param allow_remote: allow a ``ws://`` address that is not loopback (``0.0.0.0``: every
        interface); needs ``token_file``.
    :raises ValueError: an address we will not serve on (see :func:`check_listen`).
    :raises StartupError: the runtime exited, or was not ready in time (with its stderr tail).
    """
    config = config or CodexConfig()
    scheme = check_listen(listen, allow_remote=allow_remote, token_file=token_file)
    with tempfile.TemporaryDirectory(prefix="codex-anyio-serve-") as scratch:
        argv = config.argv(listen)
        tokens: Path | None = None
        if scheme == "ws":
            if token_file is None:
                tokens = Path(scratch) / "token"
                tokens.touch(mode=0o600)
                tokens.write_text(secrets.token_urlsafe(32), encoding="utf-8")
            else:
                tokens = Path(token_file)
            argv += ["--ws-auth", "capability-token", "--ws-token-file", os.fspath(tokens)]
        process, marker = await open_runtime_process(
            config, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        reaper = ProcessTreeReaper(process.pid, marker)
        tail = _StderrTail(64 * 1024)
        announced = anyio.Event()
        found: list[str] = []
        body_error: BaseException | None = None
        try:
            # One error, not a group: a runtime that fails to start is a bare StartupError,
            # and what the body raised comes back as it was raised.
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_drain, process, tail, announced, found)
                    url = await _started(process, listen, tail, announced, found, ready_timeout)
                    try:
                        yield RunningServer(url=url, token_file=tokens, pid=process.pid)
                    except BaseException as exc:
                        body_error = exc
                        raise
                    finally:
                        with anyio.CancelScope(shield=True):
                            await _stop(process, reaper)
                        tg.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                replacement = replacement_for(group, body_error)
                if replacement is None:
                    raise
            else:
                replacement = None
            if replacement is not None:
                reraise(replacement, body_error)
        finally:
            with anyio.CancelScope(shield=True):
                await _stop(process, reaper)
                await run_stop_command(config)
                await process.aclose()


async def _drain(
    process: anyio.abc.Process, tail: _StderrTail, announced: anyio.Event, found: list[str]
) -> None:
    """Keep stderr flowing (a full pipe would stall the runtime) and catch the banner line."""
    assert process.stderr is not None
    pending = ""
    try:
        async for chunk in process.stderr:
            tail.append(chunk)
            if not announced.is_set():
                pending += _ANSI_TEXT.sub("", chunk.decode("utf-8", "replace"))
                match = _LISTENING.search(pending)
                if match:
                    found.append(match.group(1))
                    announced.set()
                pending = pending[-4096:]
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    finally:
        announced.set()  # EOF: the process is gone; the waiter sees no address


async def _started(
    process: anyio.abc.Process,
    listen: str,
    tail: _StderrTail,
    announced: anyio.Event,
    found: list[str],
    ready_timeout: float,
) -> str:
    def failed(reason: str) -> StartupError:
        return StartupError(reason, returncode=process.returncode, stderr_tail=tail.text())

    with anyio.move_on_after(ready_timeout) as scope:
        if listen.lower().startswith("ws:"):
            await announced.wait()
            if not found:
                with anyio.move_on_after(2):
                    await process.wait()
                raise failed(f"the app-server exited before listening on {listen}")
            url = found[0]
        else:
            url = "unix://" + listen.split("://", 1)[1]
        try:
            from .._wire._ws import wait_ready  # wsproto: only when a server is started

            await wait_ready(Address.parse(url), ready_timeout)
        except StartupError as exc:
            raise failed(f"the app-server on {url} did not become ready: {exc}") from None
        return url
    assert scope.cancelled_caught
    raise failed(f"the app-server did not listen on {listen} within {ready_timeout:g} s")


async def _stop(process: anyio.abc.Process, reaper: ProcessTreeReaper) -> None:
    """SIGTERM the group, bounded wait, SIGKILL; then reap what escaped the group."""
    if process.returncode is not None:
        return
    await reaper.snapshot()
    _signal_group(process, signal.SIGTERM)
    with anyio.move_on_after(TERMINATE_GRACE):
        await process.wait()
    _signal_group(process, signal.SIGKILL)
    await process.wait()
    await reaper.reap()


def _signal_group(process: anyio.abc.Process, sig: int) -> None:
    if sys.platform == "win32":  # pragma: no cover
        process.kill()
        return
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
