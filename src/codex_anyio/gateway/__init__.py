"""The model gateway: every model call of the runtime joined, recorded, and answered from
anywhere.

:class:`ModelGateway` is a Responses API server on loopback that the runtime's model provider
points at (``AsyncCodex(gateway=...)`` writes that override for the runtime). Each call is
joined to its thread and turn through the runtime's ``x-codex-turn-metadata`` header,
answered by a policy function, forwarded to an upstream endpoint, or replayed from a
cassette, and recorded as an :class:`Exchange` (live, ``TurnResult.model_calls``, and in a
JSONL cassette with ``record=``).

What this package owns: the HTTP server (h11 on AnyIO streams, ``_http``), the request join
(``_request``), the answer vocabulary and builders (``_events``), the exchange records
(``_exchange``), the answerers (``_answerer``: policy; ``_forward`` and its HTTP client,
``_upstream``; ``_replay``), and the cassette format (``_cassette``). What it may import: the
base modules, the exceptions, and ``h11``, loaded only when a gateway starts. It knows
nothing of the app-server client: the user API sees it through the small ``ModelCallSource``
protocol (``codex_anyio._api``).
"""

from .._exceptions import CassetteError, ReplayMismatchError
from .._public import publish
from ._answerer import Policy
from ._cassette import CASSETTE_VERSION, read_cassette
from ._events import (
    DropConnection,
    PlainResponse,
    ResponseEvent,
    SseEvent,
    StreamStart,
    completed_event,
    created_event,
    failed_event,
    function_call_events,
    message_events,
    response,
    usage,
)
from ._exchange import Exchange
from ._gateway import ModelGateway
from ._replay import VOLATILE_FIELDS
from ._request import ModelRequest

__all__ = [
    "CASSETTE_VERSION",
    "VOLATILE_FIELDS",
    "CassetteError",
    "DropConnection",
    "Exchange",
    "ModelGateway",
    "ModelRequest",
    "PlainResponse",
    "Policy",
    "ReplayMismatchError",
    "ResponseEvent",
    "SseEvent",
    "StreamStart",
    "completed_event",
    "created_event",
    "failed_event",
    "function_call_events",
    "message_events",
    "read_cassette",
    "response",
    "usage",
]

publish(globals())
