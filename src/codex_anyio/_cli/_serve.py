"""``codex-anyio serve``: start a local runtime on a socket for other programs to attach to.

Prints where it listens and the token file, then serves until Ctrl-C (or until ``--for``
seconds have passed). It listens on loopback only: another address needs ``--allow-remote``
and ``--token-file`` (see ``_serve.check_listen``). Exit status: 0 after ``--for``, 130 on
Ctrl-C, 1 if the runtime could not start, 2 for an address it will not serve on.
``--scripted`` answers every turn from a built-in echoing model on loopback instead of a real
one: no login, no network, for demos and for trying ``connect=``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio

from .._exceptions import StartupError
from .._wire._config import CodexConfig
from ..serve._server import check_listen, serve_app_server

__all__ = ["add_serve_parser", "serve_command"]


def add_serve_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="start a local app-server on a WebSocket or unix socket for others to attach to",
        description=(
            "Run `codex app-server --listen ...` and print the address and token file that "
            "clients pass as CodexConfig(connect=..., token_file=...). It listens on loopback "
            "only unless --allow-remote is given (with --token-file)."
        ),
        epilog=(
            "exit status: 0 after --for, 130 on Ctrl-C, 1 if the runtime could not start, "
            "2 for an address it will not serve on"
        ),
    )
    serve.add_argument(
        "--listen",
        default="ws://127.0.0.1:0",
        help="ws://127.0.0.1:PORT (port 0: any free port; loopback only unless "
        "--allow-remote) or unix://PATH",
    )
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --listen address such as ws://0.0.0.0:PORT (every "
        "interface); requires --token-file, which remote clients need",
    )
    serve.add_argument(
        "--token-file", default=None, help="token file to require (default: a new random one)"
    )
    serve.add_argument("--codex-home", default=None, help="CODEX_HOME of the runtime")
    serve.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="runtime config override (TOML value), repeatable",
    )
    serve.add_argument(
        "--scripted", action="store_true", help="answer from a built-in echoing model (offline)"
    )
    serve.add_argument(
        "--for", dest="duration", type=float, default=None, help="stop after this many seconds"
    )
    serve.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")


def _scripted_config(base: CodexConfig) -> AbstractAsyncContextManager[CodexConfig]:
    from ..testing._echo import echo_runtime  # shared with `batch --scripted`

    return echo_runtime(base)


async def _serve(args: argparse.Namespace) -> int:
    base = CodexConfig(config_overrides=tuple(args.config), codex_home=args.codex_home)
    async with _scripted_config(base) if args.scripted else _plain(base) as config:
        async with serve_app_server(
            config, args.listen, token_file=args.token_file, allow_remote=args.allow_remote
        ) as server:
            print(f"listening on: {server.url}", flush=True)
            if server.token_file is not None:
                print(f"token file: {server.token_file}", flush=True)
            print(
                f"attach: CodexConfig(connect={server.url!r}"
                + (f", token_file={os.fspath(server.token_file)!r})" if server.token_file else ")"),
                flush=True,
            )
            if args.duration is not None:
                await anyio.sleep(args.duration)
            else:
                await anyio.sleep_forever()
    return 0


@asynccontextmanager
async def _plain(base: CodexConfig) -> AsyncIterator[CodexConfig]:
    yield base


def serve_command(args: argparse.Namespace) -> int:
    try:
        check_listen(args.listen, allow_remote=args.allow_remote, token_file=args.token_file)
    except ValueError as exc:
        print(f"codex-anyio serve: {exc}", file=sys.stderr)
        return 2
    try:
        return anyio.run(_serve, args, backend=args.backend)
    except StartupError as exc:
        print(f"codex-anyio serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
