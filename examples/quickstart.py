"""Quickstart: start a thread, run a turn, print the answer."""

from __future__ import annotations

from _offline import run

from codex_anyio import AsyncCodex
from codex_anyio.testing import message


async def main(codex: AsyncCodex) -> None:
    print("runtime:", codex.metadata.user_agent)
    thread = await codex.thread_start()
    result = await thread.run("Say hello in five words.")
    print(result.status, "->", result.final_response)


if __name__ == "__main__":
    run(main, [message("Hello there, nice to meet!")])
