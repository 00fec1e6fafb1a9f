"""``codex-anyio demo``: a real conversation with the real runtime, offline by default.

(``codex-anyio batch`` runs a JSONL file of tasks through a pool: see ``_batch``;
``codex-anyio serve`` starts a runtime on a socket for others to attach to: see ``_serve``;
``codex-anyio login | logout`` sign the runtime in and out: see ``_login``.)

The demo starts the pinned ``codex app-server`` against a built-in scripted model on loopback
(no network, no credentials), streams a reply as it is generated, lets the model call a
Python tool, then runs a slow turn under a timeout and shows that leaving the timeout's scope
interrupted the turn on the server. ``--live`` runs the same conversation against your own
Codex login and a real model.

Exit statuses of the demo: 0 when the conversation ran, 1 on an error (one line, e.g. no
login for ``--live``), 130/143/129 on SIGINT/SIGTERM/SIGHUP (see ``_signals``). The
dispatcher gives every command the same error policy (``_errors``): an error no command
handled is one line ``codex-anyio <command>: ...`` and status 1, ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio

from ..__about__ import __version__
from .._api._codex import AsyncCodex
from .._api._thread import Thread
from ._batch import OneLineErrors, add_batch_parser, batch_command
from ._errors import EXIT_USAGE, UsageError, add_verbose, report
from ._login import add_login_parsers, login_command, logout_command
from ._serve import add_serve_parser, serve_command
from ._signals import Stop, run_until_stopped

TIMEOUT = 1.5
"""Seconds the slow turn is given before its scope expires."""

DEMO_EXIT_STATUSES: Final = """\
exit status:
  0    the conversation ran
  1    an error, in one line (-v: its traceback); --live without a login says to run
       `codex-anyio login`
  130  stopped by Ctrl-C (143: SIGTERM, 129: SIGHUP), after interrupting the turn and
       stopping the runtime and the scripted model
"""
"""What each exit status of ``codex-anyio demo`` means (its ``--help`` epilog)."""

PROMPTS = (
    "In two sentences: what does structured concurrency buy an agent loop?",
    "Use the weather tool to check the weather in Lisbon, then tell me in one line.",
    "Write a very long essay about cancellation, at least 3,000 words.",
)


async def weather(city: str) -> str:
    """Current weather for a city."""
    return f"{city}: 21 degrees C, clear sky, light wind from the north-west"


def _script() -> list[Any]:
    from ..testing import function_call, message, reply, stall

    essay = "Cancellation is a conversation between a caller and the work it started. " * 40
    return [
        message(
            "Structured concurrency ties every task to a scope, so nothing your agent starts can "
            "outlive the code that started it. Timeouts and cancellation then clean up for you, "
            "including the turn running on the server.",
            delay=0.03,
        ),
        reply(message("Let me check.", deltas=2), function_call("weather", {"city": "Lisbon"})),
        message("Lisbon is clear and mild today: 21 degrees C with a light breeze.", delay=0.03),
        stall(message(essay, delay=0.05)),
    ]


@asynccontextmanager
async def _open(live: bool) -> AsyncIterator[tuple[AsyncCodex, Any]]:
    if live:
        async with AsyncCodex() as codex:
            yield codex, None
        return
    from ..testing import open_scripted_codex

    async with open_scripted_codex(_script()) as scripted:
        yield scripted.codex, scripted.model


async def _stream(thread: Thread, prompt: str) -> None:
    print(f"\n> {prompt}", flush=True)
    async with thread.turn(prompt) as turn:
        async for event in turn.stream():
            if event.method == "item/agentMessage/delta":
                print(event.raw["delta"], end="", flush=True)
            elif event.method == "item/completed" and event.params.item.type == "dynamicToolCall":
                item = event.params.item
                print(f"\n  [tool {item.tool}({item.arguments}) -> {item.status}]")
    print(f"\n  [turn {turn.status}]")


async def demo(live: bool, stop: Stop) -> None:
    started = time.monotonic()
    async with _open(live) as (codex, model):
        # A stop signal interrupts the running turn while the client is still up to say so.
        with stop.here():
            await _conversation(codex, model)
            print(f"\ndone in {time.monotonic() - started:.1f} s")


async def _conversation(codex: AsyncCodex, model: Any) -> None:
    meta = codex.metadata
    print(
        f"codex-anyio {__version__}: connected to {meta.user_agent} ({meta.platform_os})",
        flush=True,
    )
    thread = await codex.thread_start(dynamic_tools=[weather])
    await _stream(thread, PROMPTS[0])
    await _stream(thread, PROMPTS[1])

    print(f"\n> {PROMPTS[2]}")
    print(f"  (this turn gets {TIMEOUT} s; then its scope expires)")
    with anyio.move_on_after(TIMEOUT) as scope:
        async with thread.turn(PROMPTS[2]) as turn:
            async for text in turn.stream_text():
                print(text, end="", flush=True)
    # Leaving the `async with` interrupted the turn and waited for its completion.
    took = (anyio.current_time() - scope.deadline) * 1000
    if scope.cancelled_caught:
        read = await thread.read(include_turns=True)
        status = read.thread.turns[-1].status
        print(
            f"\n  [scope expired; the server says the turn is '{status}' "
            f"({took:.0f} ms after the deadline)]"
        )
        if model is not None:
            with anyio.move_on_after(2):
                await model.exchanges[-1].abandoned.wait()
            dropped = model.exchanges[-1].abandoned.is_set()
            print(f"  [the runtime dropped the model's stream: {dropped}]")
    else:
        print(f"\n  [turn {turn.status} within the timeout]")


async def _demo_status(live: bool, stop: Stop) -> int:
    await demo(live, stop)
    return 0


def demo_command(args: argparse.Namespace) -> int:
    """Run ``codex-anyio demo``: 0, 1 on an error (raised to the dispatcher), 128 + signum."""
    return run_until_stopped(lambda stop: _demo_status(args.live, stop), backend=args.backend)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": demo_command,
    "batch": batch_command,
    "serve": serve_command,
    "login": login_command,
    "logout": logout_command,
}
"""Each command's entry: it returns the exit status, or raises for the dispatcher to print."""


def _parser() -> argparse.ArgumentParser:
    # One-line argument errors, for every command (subcommands' parsers are of the same class).
    parser = OneLineErrors(prog="codex-anyio", description=__doc__.split("\n\n")[0])
    add_verbose(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "demo",
        help="run the demo conversation",
        epilog=DEMO_EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--live", action="store_true", help="use your Codex login and a real model")
    run.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    add_verbose(run, default=argparse.SUPPRESS)
    add_batch_parser(commands)
    add_serve_parser(commands)
    add_login_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``codex-anyio`` command: parse, run the command, turn what escapes it into one
    line and an exit status (1 for an error, 2 for a usage error, 130 for Ctrl-C)."""
    args = _parser().parse_args(argv)
    prog = f"codex-anyio {args.command}"
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before the signal receiver is installed, or after it
        return 130
    except Exception as exc:
        return report(prog, exc, verbose=args.verbose)
