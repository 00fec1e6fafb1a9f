"""Streaming: print the reply as it is generated, and see every typed event."""

from __future__ import annotations

from _offline import run

from codex_anyio import AsyncCodex
from codex_anyio.testing import message


async def main(codex: AsyncCodex) -> None:
    thread = await codex.thread_start()
    async with thread.turn("Count to five, slowly.") as turn:
        async for text in turn.stream_text():
            print(text, end="", flush=True)
    print()
    async with thread.turn("Again, and show me the events.") as turn:
        async for event in turn.stream():
            print(" ", event.method, type(event.params).__name__)
    spent = turn.result().usage.total_tokens
    print("usage:", spent, "tokens this turn,", thread.usage().total_tokens, "in the thread")


if __name__ == "__main__":
    run(main, [message("one two three four five", delay=0.1), message("one two three")])
