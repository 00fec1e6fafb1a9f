"""``ModelRequest``: one model call as the runtime made it, joined to its thread and turn.

The runtime labels every model request with the header ``x-codex-turn-metadata``, a JSON
object naming the thread, the turn, the request kind and more (``PROTOCOL_NOTES.md``); this
module reads it, so a policy, a recording and ``TurnResult.model_calls`` all know exactly
which turn a call belongs to. A missing or malformed header leaves the ids None: a request
from something other than the runtime is still answered, it is only not joined.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._json import dumps, loads
from .._redact import REDACTED, hides_values, is_secret_name, redact, redact_text

__all__ = [
    "TURN_METADATA_HEADER",
    "ModelRequest",
    "TextRedactor",
    "redact_headers",
    "turn_metadata",
]

TURN_METADATA_HEADER = "x-codex-turn-metadata"
"""The runtime's per-request label (thread, turn, request kind, window, model, sandbox)."""


def turn_metadata(headers: Mapping[str, str]) -> dict[str, Any]:
    """The decoded ``x-codex-turn-metadata`` header; empty if absent or not a JSON object."""
    raw = headers.get(TURN_METADATA_HEADER)
    if not raw:
        return {}
    try:
        value = loads(raw.encode())
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def redact_headers(
    headers: Mapping[str, str], text: Callable[[str], str] = redact_text
) -> dict[str, str]:
    """``headers`` fit to store or show: credential headers (``authorization``, ``cookie``,
    ``x-api-key``, ...) replaced, credentials inside other values hidden (by ``text``)."""
    return {
        name: REDACTED if is_secret_name(name) else text(value) for name, value in headers.items()
    }


class TextRedactor:
    """:func:`redact_text` with a memory: every model request repeats the conversation so far
    (the instructions alone are ~17 kB, the tool schemas hundreds of short strings), and
    redacting a 40 kB body afresh costs ~25 ms of regular expressions, which a recording or
    a replay would pay on every call. At most ``entries`` texts of ``budget`` characters in
    all are remembered, the least recently used forgotten first."""

    def __init__(self, budget: int = 16 * 1024 * 1024, entries: int = 65536) -> None:
        self._seen = _Memory(budget, entries)
        self._parts = _Memory(budget, entries)
        """Redacted parts of documents, by their JSON text (see :meth:`redact`); shared
        between the documents that hold them, so never to be changed in place."""

    def __call__(self, text: str) -> str:
        done: str = self._seen.get(text)
        if done is _MISSING:
            done = redact_text(text)
            self._seen.put(text, done)
        return done

    def redact(self, value: Any) -> Any:
        """:func:`~codex_anyio._redact.redact` with this memory, and a memory of whole parts
        too: of a JSON object, each top-level value and each item of a top-level list is
        remembered by its JSON text. A request body's instructions, tool schemas and the
        conversation so far repeat from call to call; walking them afresh cost ~0.5 ms of a
        27 kB body per call (hundreds of keys checked against the secret names), and the
        lookup costs encoding them once, in C."""
        if not isinstance(value, dict):
            return redact(value, text=self)
        out: dict[str, Any] = {}
        for key, item in value.items():
            if hides_values(str(key)):
                out[key] = redact(item, all_values=True, depth=1, text=self)
            elif isinstance(item, list):
                out[key] = [self._part(element, 2) for element in item]
            else:
                out[key] = self._part(item, 1)
        return out

    def _part(self, value: Any, depth: int) -> Any:
        if not isinstance(value, (dict, list)):
            return redact(value, depth=depth, text=self)
        try:
            key = dumps(value)
        except (TypeError, ValueError):  # not JSON-encodable as it is: no memory
            return redact(value, depth=depth, text=self)
        done = self._parts.get(key)
        if done is _MISSING:
            done = redact(value, depth=depth, text=self)
            self._parts.put(key, done)
        return done


_MISSING: Any = object()


class _Memory:
    """A bounded memory of what keys (strings or bytes) gave: at most ``entries`` of them,
    ``budget`` characters in all, the least recently used forgotten first; a key longer
    than the budget is not kept."""

    __slots__ = ("_budget", "_entries", "_held", "_values")

    def __init__(self, budget: int, entries: int) -> None:
        self._budget = budget
        self._entries = entries
        self._held = 0
        self._values: OrderedDict[str | bytes, Any] = OrderedDict()

    def get(self, key: str | bytes) -> Any:
        """What ``key`` gave, or ``_MISSING``."""
        value = self._values.get(key, _MISSING)
        if value is not _MISSING:
            self._values.move_to_end(key)
        return value

    def put(self, key: str | bytes, value: Any) -> None:
        if len(key) > self._budget:
            return
        self._values[key] = value
        self._held += len(key)
        while self._held > self._budget or len(self._values) > self._entries:
            old, _ = self._values.popitem(last=False)
            self._held -= len(old)


_UNDECODED: Any = object()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@attrs.frozen(eq=False)
class ModelRequest:
    """A model request the runtime made (usually ``POST /v1/responses``), as a policy gets it.

    ``headers`` are the request's own (names lowercased), credentials included, since a
    forwarding policy passes them on; they are kept out of ``repr`` and every record stores
    :meth:`redacted_headers` instead. ``body`` is the decoded JSON body (None if empty or not
    JSON), decoded when first read: a forward that records nothing passes ``raw_body`` on and
    never pays for decoding a long conversation (~0.2 ms of 40 kB per call, measured).
    ``thread_id``, ``turn_id`` and ``request_kind`` come from the runtime's
    ``x-codex-turn-metadata`` header (all of it in ``metadata``); ``index`` is the call's
    index within its turn, from 0, in the order the calls arrived.
    """

    method: str
    path: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    _body: Any = attrs.field(repr=False, alias="body")
    raw_body: bytes = attrs.field(repr=False)
    thread_id: str | None
    turn_id: str | None
    request_kind: str | None
    index: int
    metadata: Mapping[str, Any] = attrs.field(repr=False, factory=dict)

    @property
    def body(self) -> Any:
        """The decoded JSON body (None if empty or not JSON)."""
        body = self._body
        if body is _UNDECODED:
            try:
                body = loads(self.raw_body) if self.raw_body else None
            except ValueError:
                body = None
            object.__setattr__(self, "_body", body)  # a cache: frozen to everyone else
        return body

    @classmethod
    def build(
        cls,
        method: str,
        path: str,
        headers: Mapping[str, str],
        raw_body: bytes,
        index: int | Callable[[str | None, str | None], int] = 0,
    ) -> ModelRequest:
        """The request, joined, from a request whose ``headers`` are lowercased (the body
        is decoded when first read). ``index`` is the call's index in its turn, or what
        gives it from the joined (thread id, turn id)."""
        metadata = turn_metadata(headers)
        thread_id = _text(metadata.get("thread_id")) or _text(headers.get("x-client-request-id"))
        turn_id = _text(metadata.get("turn_id"))
        if not isinstance(index, int):
            index = index(thread_id, turn_id)
        return cls(
            method=method,
            path=path,
            headers=headers,
            body=_UNDECODED,
            raw_body=raw_body,
            thread_id=thread_id,
            turn_id=turn_id,
            request_kind=_text(metadata.get("request_kind")),
            index=index,
            metadata=metadata,
        )

    @property
    def is_responses_call(self) -> bool:
        """Whether this is a Responses API call (``POST .../responses``)."""
        return self.method == "POST" and self.path.split("?", 1)[0].rstrip("/").endswith(
            "/responses"
        )

    @property
    def input(self) -> list[Any]:
        """The body's ``input`` items (empty if it has none)."""
        items = self.body.get("input") if isinstance(self.body, dict) else None
        return items if isinstance(items, list) else []

    def function_call_outputs(self) -> list[dict[str, Any]]:
        """The ``function_call_output`` items of this request's ``input``: what the tools the
        model called returned."""
        return [
            item
            for item in self.input
            if isinstance(item, dict) and item.get("type") == "function_call_output"
        ]

    def user_texts(self) -> list[str]:
        """The texts of the ``user`` messages of ``input``, in order (the runtime's own
        context messages, such as ``<environment_context>``, included)."""
        texts: list[str] = []
        for item in self.input:
            if isinstance(item, dict) and item.get("role") == "user":
                for part in item.get("content") or ():
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        texts.append(part["text"])
        return texts

    def redacted_headers(self, text: Callable[[str], str] = redact_text) -> dict[str, str]:
        """The headers with credentials hidden (what records and logs show; ``text``
        redacts a value, a :class:`TextRedactor` for one with a memory)."""
        return redact_headers(self.headers, text)
