"""``InspectModelPolicy``: a model gateway policy that answers the runtime's model calls with
the model Inspect is evaluating.

Each Responses request becomes one ``Model.generate`` call (``_translate``), made in the
gateway's task, which runs inside the sample: Inspect's context (the transcript, the sample's
limits, the active model and its usage accounting) is the sample's, so every call is a
``ModelEvent`` of the sample and counts against its token limit. A limit Inspect raises from
``generate`` is not the model call's failure but the sample's end: the policy keeps it and
calls ``on_limit`` (the agent cancels its turn, which interrupts it on the server, and raises
the kept error where Inspect expects it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from inspect_ai.model import Model
from inspect_ai.util import LimitExceededError

from ..gateway._events import DropConnection, PlainResponse
from ..gateway._request import ModelRequest
from ._translate import responses_call, responses_events

__all__ = ["InspectModelPolicy"]


class InspectModelPolicy:
    """Answers each Responses request with ``model.generate(...)``.

    :param model: the Inspect model (``get_model()``: the one being evaluated, or a role's).
    :param on_limit: called once when ``generate`` raises an Inspect limit
        (``LimitExceededError``: a token or cost limit); the error is kept in :attr:`limit`.
    """

    def __init__(self, model: Model, *, on_limit: Callable[[], None] | None = None) -> None:
        self.model = model
        self.on_limit = on_limit
        self.limit: LimitExceededError | None = None
        """The Inspect limit a call hit (None: none)."""

    async def __call__(self, request: ModelRequest) -> list[Any]:
        if not request.is_responses_call:
            return [PlainResponse(404, b'{"error": "only /v1/responses is served"}')]
        call = responses_call(request.body)
        try:
            output = await self.model.generate(
                call.messages, tools=call.tools, tool_choice=call.tool_choice, config=call.config
            )
        except LimitExceededError as exc:
            if self.limit is None:
                self.limit = exc
                if self.on_limit is not None:
                    self.on_limit()
                    # Hold the call open: the agent interrupts the turn now, and the runtime
                    # drops this stream (cancelling this wait). Failing the call instead would
                    # race the interrupt and could fail the turn first.
                    await anyio.sleep_forever()
            raise DropConnection(f"Inspect limit: {exc}") from None
        return responses_events(output)
