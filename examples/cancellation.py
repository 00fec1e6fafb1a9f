"""Cancellation: a timeout around a turn interrupts it on the server.

With the official SDK, a timed-out ``await thread.run()`` leaves the turn running (and the
model spending). Here the scope that started the turn owns it.
"""

from __future__ import annotations

import anyio
from _offline import run

from codex_anyio import AsyncCodex, TurnIdleTimeoutError
from codex_anyio.testing import message, stall


async def main(codex: AsyncCodex) -> None:
    thread = await codex.thread_start()
    with anyio.move_on_after(1.0) as scope:
        await thread.run("Write a 10,000 word novel.")
    read = await thread.read(include_turns=True)
    print(
        "timed out:", scope.cancelled_caught, "| server-side status:", read.thread.turns[-1].status
    )

    # A turn that goes silent: an idle timeout interrupts it and raises.
    try:
        await thread.run("Think forever.", idle_timeout=0.5)
    except TurnIdleTimeoutError as exc:
        print("idle:", exc)


if __name__ == "__main__":
    run(main, [stall(message("Chapter one. " * 50, delay=0.05)), stall()])
