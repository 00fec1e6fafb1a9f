"""``codex-anyio demo``: a real conversation with the real runtime, offline by default.

(``codex-anyio batch`` runs a JSONL file of tasks through a pool: see ``_batch``;
``codex-anyio serve`` starts a runtime on a socket for others to attach to: see ``_serve``.)

The demo starts the pinned ``codex app-server`` against a built-in scripted model on loopback
(no network, no credentials), streams a reply as it is generated, lets the model call a
Python tool, then runs a slow turn under a timeout and shows that leaving the timeout's scope
interrupted the turn on the server. ``--live`` runs the same conversation against your own
Codex login and a real model.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ..__about__ import __version__
from .._api._codex import AsyncCodex
from .._api._thread import Thread
from ._batch import OneLineErrors, add_batch_parser, batch_command
from ._serve import add_serve_parser, serve_command

TIMEOUT = 1.5
"""Seconds the slow turn is given before its scope expires."""

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
    print(f"\n> {prompt}")
    async with thread.turn(prompt) as turn:
        async for event in turn.stream():
            if event.method == "item/agentMessage/delta":
                print(event.raw["delta"], end="", flush=True)
            elif event.method == "item/completed" and event.params.item.type == "dynamicToolCall":
                item = event.params.item
                print(f"\n  [tool {item.tool}({item.arguments}) -> {item.status}]")
    print(f"\n  [turn {turn.status}]")


async def demo(live: bool) -> None:
    started = time.monotonic()
    async with _open(live) as (codex, model):
        meta = codex.metadata
        print(f"codex-anyio {__version__}: connected to {meta.user_agent} ({meta.platform_os})")
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
    print(f"\ndone in {time.monotonic() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    # One-line argument errors, for every command (subcommands' parsers are of the same class).
    parser = OneLineErrors(prog="codex-anyio", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="run the demo conversation")
    run.add_argument("--live", action="store_true", help="use your Codex login and a real model")
    run.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    add_batch_parser(commands)
    add_serve_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "batch":
        return batch_command(args)
    if args.command == "serve":
        return serve_command(args)
    try:
        anyio.run(demo, args.live, backend=args.backend)
    except KeyboardInterrupt:
        return 130
    return 0
