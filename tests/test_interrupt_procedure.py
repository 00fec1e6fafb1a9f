"""The interrupt procedure against a runtime that never answers an interrupt reaching it after
the turn's end (measured on 0.163.0): no step may wait for that answer past the end. The real
runtime only shows the race now and then, so a requester that never answers stands in for it."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from codex_anyio._rpc._interrupt import interrupt_and_wait, request_unless_ended
from codex_anyio._rpc._notifications import Notification, open_subscription

pytestmark = pytest.mark.anyio


class Silent:
    """Takes every request and answers none of them."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.asked = anyio.Event()

    async def request(self, method: str, params: Any = None) -> Any:
        self.sent.append(method)
        self.asked.set()
        await anyio.sleep_forever()


def completed() -> Notification:
    return Notification("turn/completed", {"threadId": "th", "turn": {"id": "tu"}}, "th", "tu")


async def test_an_unanswered_interrupt_stops_waiting_once_the_turn_has_ended() -> None:
    sub, stream = open_subscription(limit=10, what="the stream of turn tu")
    client = Silent()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request_unless_ended, client, {"turnId": "tu"}, stream)
            await client.asked.wait()
            sub.deliver(completed())
            sub.finish()
    assert client.sent == ["turn/interrupt"]
    assert stream.receive_nowait().method == "turn/completed"


async def test_the_procedure_ends_on_the_turns_end_while_its_interrupt_goes_unanswered() -> None:
    sub, stream = open_subscription(limit=10, what="the stream of turn tu")
    client = Silent()
    seen: list[str] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def end_once_asked() -> None:
                await client.asked.wait()
                sub.deliver(completed())
                sub.finish()

            tg.start_soon(end_once_asked)
            done = await interrupt_and_wait(
                client,
                "th",
                "tu",
                stream,
                lambda note: seen.append(note.method),
                deadline=anyio.current_time() + 60,
            )
    assert done
    assert seen == ["turn/completed"]


async def test_a_turn_whose_end_is_already_buffered_is_not_interrupted_again() -> None:
    sub, stream = open_subscription(limit=10, what="the stream of turn tu")
    sub.deliver(completed())
    sub.finish()
    client = Silent()
    with anyio.fail_after(5):
        done = await interrupt_and_wait(
            client, "th", "tu", stream, lambda note: None, deadline=anyio.current_time() + 60
        )
    assert done
    assert client.sent == []
