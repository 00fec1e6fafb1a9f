"""``codex-anyio serve``: start a local runtime on a socket for other programs to attach to.

Prints where it listens and the token file, then serves until Ctrl-C, SIGTERM or SIGHUP (or
until ``--for`` seconds have passed); each stops the runtime and everything it started and
removes the token file and the scripted ``CODEX_HOME`` before the command exits (see
``_signals``). It listens on loopback only: another address needs ``--allow-remote`` and
``--token-file`` (see ``_serve.check_listen``). Exit status: :data:`EXIT_STATUSES`.
``--scripted`` answers every turn from a built-in echoing model on loopback instead of a real
one: no login, no network, for demos and for trying ``connect=``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import anyio

from .._wire._config import CodexConfig
from ..serve._server import check_listen, serve_app_server
from ._errors import EXIT_USAGE, add_verbose
from ._signals import run_until_stopped

__all__ = ["EXIT_STATUSES", "add_serve_parser", "serve_command"]

EXIT_STATUSES: Final = """\
exit status:
  0    stopped after --for seconds
  1    the runtime could not start, or another error (one line naming the cause)
  2    an address it will not serve on (beyond loopback without --allow-remote and
       --token-file), nothing was started
  130  stopped by Ctrl-C (143: SIGTERM, 129: SIGHUP), after stopping everything it started
"""
"""What each exit status of ``codex-anyio serve`` means (its ``--help`` epilog)."""


def add_serve_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="start a local app-server on a WebSocket or unix socket for others to attach to",
        description=(
            "Run `codex app-server --listen ...` and print the address and token file that "
            "clients pass as CodexConfig(connect=..., token_file=...). It listens on loopback "
            "only unless --allow-remote is given (with --token-file)."
        ),
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    add_verbose(serve, default=argparse.SUPPRESS)


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
    """Run ``codex-anyio serve``; the exit status is one of :data:`EXIT_STATUSES` (an error
    such as a runtime that would not start is raised, for the dispatcher's one line)."""
    try:
        check_listen(args.listen, allow_remote=args.allow_remote, token_file=args.token_file)
    except ValueError as exc:
        print(f"codex-anyio serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_until_stopped(lambda _: _serve(args), backend=args.backend)
