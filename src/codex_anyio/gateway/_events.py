"""What a policy yields: Responses API stream events, and the few answers that are not one.

A policy answers a model call by yielding events. Most are plain mappings, the Responses
API's Server-Sent Events (``{"type": "response.output_text.delta", "delta": ...}``), each
sent as ``event: TYPE`` / ``data: JSON``. Three objects say something else:

* :class:`PlainResponse` first: answer with this status and body instead of a stream
  (a 429 with the service's usage-limit body, a 500);
* :class:`StreamStart` first: extra headers for the 200 stream (the ``x-codex-*`` rate
  limits the service sends);
* :class:`SseEvent`: one event exactly as written, for a forwarded stream whose events must
  reach the runtime byte for byte, malformed ones included.

Raising :class:`DropConnection` breaks the connection off without ending the stream (what a
dropped network looks like to the runtime). The builders below make the events of a complete
answer (:func:`response`), so a policy reads as what it answers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeAlias

import attrs

from .._json import dumps, loads

__all__ = [
    "DEFAULT_USAGE",
    "ClientGone",
    "DropConnection",
    "PlainResponse",
    "ResponseEvent",
    "SseEvent",
    "StreamStart",
    "completed_event",
    "created_event",
    "decode_event",
    "encode_event",
    "failed_event",
    "function_call_events",
    "message_events",
    "new_id",
    "response",
    "usage",
]

_ids = itertools.count(1)

Headers: TypeAlias = "tuple[tuple[str, str], ...]"


def _pairs(headers: Iterable[tuple[str, str]]) -> Headers:
    return tuple((str(name), str(value)) for name, value in headers)


def new_id(prefix: str) -> str:
    """A fresh id such as ``resp_000001`` (unique within this process)."""
    return f"{prefix}_{next(_ids):06d}"


@attrs.frozen
class PlainResponse:
    """Answer with an HTTP status and a body instead of an event stream. ``error``, if set,
    is recorded as the exchange's :attr:`~Exchange.error` (an upstream that could not be
    reached, say)."""

    status: int
    body: str | bytes = ""
    headers: Headers = attrs.field(default=(), converter=_pairs)
    content_type: str = "application/json"
    error: str | None = None


@attrs.frozen
class StreamStart:
    """The start of the 200 event stream, with extra response headers."""

    headers: Headers = attrs.field(default=(), converter=_pairs)


@attrs.frozen
class SseEvent:
    """One Server-Sent Event exactly as written (``raw``: its lines, without the blank line
    that ends it). ``data`` is its decoded ``data`` (None if it is not JSON)."""

    raw: str

    @property
    def data(self) -> Any:
        lines = [line[5:].lstrip(" ") for line in self.raw.split("\n") if line.startswith("data:")]
        try:
            return loads("\n".join(lines).encode()) if lines else None
        except ValueError:
            return None


FLUSH: Final = object()
"""Yielded by an answerer that marks its bursts (``marks_bursts``: the forward, after each
upstream chunk's events): what came before goes out now, in one write."""


class DropConnection(Exception):
    """Raised by a policy: close the connection abruptly, the stream unfinished. Its message,
    if any, is recorded as the exchange's :attr:`~Exchange.error`."""


class ClientGone(Exception):
    """The runtime closed the connection (or it broke) while the answer was being sent."""


ResponseEvent: TypeAlias = "Mapping[str, Any] | SseEvent | PlainResponse | StreamStart"
"""What a policy yields (see the module docstring)."""


def encode_event(event: Mapping[str, Any] | SseEvent) -> bytes:
    """The bytes of one Server-Sent Event."""
    if isinstance(event, SseEvent):
        return event.raw.encode() + b"\n\n"
    name = event.get("type", "message")
    return b"event: " + str(name).encode() + b"\ndata: " + dumps(dict(event)) + b"\n\n"


def decode_event(event: Mapping[str, Any] | SseEvent) -> Any:
    """How an exchange records a sent event: its decoded data, or for an event whose data is
    not a JSON object, its raw text."""
    if isinstance(event, SseEvent):
        data = event.data
        return data if isinstance(data, dict) else event.raw
    return dict(event)


DEFAULT_USAGE: dict[str, Any] = {
    "input_tokens": 10,
    "input_tokens_details": None,
    "output_tokens": 5,
    "output_tokens_details": None,
    "total_tokens": 15,
}
"""The ``usage`` :func:`completed_event` reports when given none."""


def usage(
    input_tokens: int,
    output_tokens: int,
    *,
    cached_input_tokens: int = 0,
    reasoning_output_tokens: int = 0,
    total_tokens: int | None = None,
) -> dict[str, Any]:
    """A Responses API ``usage`` object (cached and reasoning tokens in its details);
    ``total_tokens`` defaults to input + output, which is how the service counts it."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_input_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_output_tokens},
        "total_tokens": input_tokens + output_tokens if total_tokens is None else total_tokens,
    }


def created_event(response_id: str) -> dict[str, Any]:
    """``response.created``: the first event of every answer."""
    return {"type": "response.created", "response": {"id": response_id}}


def completed_event(response_id: str, usage: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``response.completed``: the answer is complete; ``usage`` is what it cost."""
    spent = dict(DEFAULT_USAGE if usage is None else usage)
    return {"type": "response.completed", "response": {"id": response_id, "usage": spent}}


def failed_event(response_id: str, message: str, *, code: str = "server_error") -> dict[str, Any]:
    """``response.failed``: the model failed to answer (the runtime fails or retries)."""
    error = {"code": code, "message": message}
    return {"type": "response.failed", "response": {"id": response_id, "error": error}}


def split_text(text: str, deltas: int | Sequence[str] | None) -> tuple[str, ...]:
    """``text`` in streaming pieces: one per word (None), ``deltas`` roughly equal pieces
    (an int), or the given pieces, which must add up to the text."""
    if deltas is None:
        words = text.split(" ")
        pieces = tuple(w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words))
    elif isinstance(deltas, int):
        size = max(1, -(-len(text) // max(1, deltas)))
        pieces = tuple(text[i : i + size] for i in range(0, len(text), size))
    else:
        pieces = tuple(deltas)
        if "".join(pieces) != text:
            raise ValueError("the deltas must add up to the text")
    return tuple(piece for piece in pieces if piece)


def message_events(
    text: str,
    *,
    deltas: int | Sequence[str] | None = None,
    item_id: str | None = None,
    output_index: int = 0,
) -> list[dict[str, Any]]:
    """An assistant message: ``output_item.added``, its text deltas, ``output_item.done``
    (see :func:`split_text` for ``deltas``)."""
    item_id = item_id or new_id("msg")
    item = {"type": "message", "role": "assistant", "id": item_id}
    events: list[dict[str, Any]] = [
        {
            "type": "response.output_item.added",
            "output_index": output_index,
            "item": {**item, "content": []},
        },
    ]
    for piece in split_text(text, deltas):
        events.append(
            {
                "type": "response.output_text.delta",
                "item_id": item_id,
                "output_index": output_index,
                "content_index": 0,
                "delta": piece,
            }
        )
    done = {**item, "content": [{"type": "output_text", "text": text}]}
    events.append({"type": "response.output_item.done", "output_index": output_index, "item": done})
    return events


def function_call_events(
    name: str,
    arguments: Any = None,
    *,
    call_id: str | None = None,
    item_id: str | None = None,
    output_index: int = 0,
) -> list[dict[str, Any]]:
    """The model calls tool ``name`` (built-in or dynamic) with ``arguments`` (a JSON string,
    or a value encoded as one)."""
    encoded = arguments if isinstance(arguments, str) else dumps(arguments or {}).decode()
    item = {
        "type": "function_call",
        "id": item_id or new_id("fc"),
        "call_id": call_id or new_id("call"),
        "name": name,
        "arguments": encoded,
    }
    return [
        {"type": "response.output_item.added", "output_index": output_index, "item": item},
        {"type": "response.output_item.done", "output_index": output_index, "item": item},
    ]


def response(
    *outputs: Sequence[Mapping[str, Any]],
    usage: Mapping[str, Any] | None = None,
    response_id: str | None = None,
) -> list[dict[str, Any]]:
    """The events of a complete answer: ``response.created``, each output's events (from
    :func:`message_events` or :func:`function_call_events`, renumbered in order), then
    ``response.completed`` with ``usage``."""
    response_id = response_id or new_id("resp")
    events = [created_event(response_id)]
    for index, output in enumerate(outputs):
        events.extend({**event, "output_index": index} for event in output)
    events.append(completed_event(response_id, usage))
    return events
