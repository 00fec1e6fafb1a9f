"""The synchronous client: a turn, a streamed turn, and a turn cut short by a timeout.

No event loop in sight: ``Codex`` runs the async client on a helper thread. The timeout
(like Ctrl-C, or ``break`` out of a stream) interrupts the turn on the server before it
raises.
"""

from __future__ import annotations

from _offline import run_sync

from codex_anyio import Codex
from codex_anyio.testing import message, stall


def main(codex: Codex) -> None:
    thread = codex.thread_start()
    print(thread.run("Say hello in five words.").final_response)

    for text in thread.turn("Count to three.").stream_text():
        print(text, end="", flush=True)
    print()

    try:
        thread.run("Write a very long essay.", timeout=1.0)
    except TimeoutError:
        turns = thread.read(include_turns=True).thread.turns or []
        print("timed out; server-side status:", turns[-1].status)


if __name__ == "__main__":
    run_sync(
        main,
        [
            message("Hello there, nice to meet!"),
            message("one, two, three", deltas=["one, ", "two, ", "three"]),
            stall(message("Once upon a time")),
        ],
    )
