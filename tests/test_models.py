"""The generated models round-trip real traffic exactly and stay forward compatible."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codex_anyio._generated import models as m
from codex_anyio._generated.converter import converter, make_converter
from codex_anyio._generated.registry import CLIENT_REQUESTS, NOTIFICATIONS, SERVER_REQUESTS

CORPUS = Path(__file__).parent / "data" / "corpus"
strict = make_converter(detailed_validation=True)


def typed_messages() -> list[tuple[str, Any, Any]]:
    """(label, type, payload) for every message of the recorded corpus."""
    cases = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        client_methods: dict[Any, str] = {}
        server_methods: dict[Any, str] = {}
        for n, line in enumerate(path.read_text().splitlines()):
            record = json.loads(line)
            message, direction = record["message"], record["direction"]
            label = f"{path.stem}:{n}"
            method = message.get("method")
            if method and "id" in message:
                table = CLIENT_REQUESTS if direction == "client" else SERVER_REQUESTS
                (client_methods if direction == "client" else server_methods)[message["id"]] = (
                    method
                )
                spec = table[method]
                if spec.params_type is not None:
                    cases.append((f"{label} {method}", spec.params_type, message["params"]))
            elif method:
                if method in NOTIFICATIONS:
                    cases.append(
                        (f"{label} {method}", NOTIFICATIONS[method].params_type, message["params"])
                    )
            elif "result" in message:
                if direction == "server":
                    spec = CLIENT_REQUESTS[client_methods[message["id"]]]
                else:
                    spec = SERVER_REQUESTS[server_methods[message["id"]]]
                cases.append((f"{label} response", spec.response_type, message["result"]))
    return cases


CASES = typed_messages()


def test_the_corpus_covers_the_recorded_flows() -> None:
    flows = {p.stem for p in CORPUS.glob("*.jsonl")}
    assert {
        "initialize",
        "thread_start",
        "turn",
        "approval",
        "dynamic_tool",
        "interrupted",
    } <= flows
    assert len(CASES) > 150


@pytest.mark.parametrize(("label", "kind", "payload"), CASES, ids=[c[0] for c in CASES])
def test_real_messages_round_trip_exactly(label: str, kind: Any, payload: Any) -> None:
    value = strict.structure(payload, kind)
    assert converter.unstructure(value) == payload


def test_absent_optionals_stay_absent_and_explicit_nulls_stay_null() -> None:
    built = m.Turn(id="t", items=[], status="completed")
    assert converter.unstructure(built) == {"id": "t", "items": [], "status": "completed"}
    wire = {"id": "t", "items": [], "status": "completed", "error": None}
    assert converter.unstructure(converter.structure(wire, m.Turn)) == wire


def test_unknown_fields_are_ignored() -> None:
    wire = {"threadId": "a", "turnId": "b", "itemId": "c", "delta": "d", "fromTheFuture": 1}
    value = converter.structure(wire, m.AgentMessageDeltaNotification)
    assert value == m.AgentMessageDeltaNotification(
        thread_id="a", turn_id="b", item_id="c", delta="d"
    )


def test_an_unknown_union_tag_becomes_an_unknown_value_with_the_raw_payload() -> None:
    raw = {"type": "holographicMessage", "id": "x", "hologram": [1, 2]}
    item = converter.structure(
        {"threadId": "t", "turnId": "u", "item": raw, "completedAtMs": 1},
        m.ItemCompletedNotification,
    ).item
    assert isinstance(item, m.UnknownThreadItem)
    assert (item.type, item.raw) == ("holographicMessage", raw)
    assert converter.unstructure(item) == raw


def test_a_schema_variant_named_unknown_is_not_confused_with_the_fallback() -> None:
    value = converter.structure({"type": "unknown", "command": "frobnicate"}, m.CommandAction)
    assert isinstance(value, m.UnknownCommandAction)
    assert value.command == "frobnicate"


def test_an_unknown_enum_value_passes_through() -> None:
    wire = {"id": "t", "items": [], "status": "pausedByTheFuture"}
    assert converter.structure(wire, m.Turn).status == "pausedByTheFuture"


# -- generated payloads --------------------------------------------------------------------

ids = st.text(min_size=1, max_size=12)
optional_text = st.one_of(st.none(), st.text(max_size=20))


def with_optionals(required: dict[str, Any], optional: dict[str, Any]) -> Any:
    """Dicts with all required keys and any subset of optional keys (null or a value)."""
    return st.fixed_dictionaries(required, optional=optional)


user_inputs = st.one_of(
    with_optionals({"type": st.just("text"), "text": st.text(max_size=30)}, {}),
    with_optionals({"type": st.just("image"), "url": st.text(max_size=30)}, {}),
    with_optionals({"type": st.just("localImage"), "path": st.text(max_size=30)}, {}),
    with_optionals({"type": st.just("skill"), "name": ids, "path": ids}, {}),
)

turn_errors = with_optionals(
    {"message": st.text(max_size=30)},
    {"additionalDetails": optional_text},
)

turns = with_optionals(
    {
        "id": ids,
        "items": st.just([]),
        "status": st.sampled_from(["completed", "interrupted", "failed", "inProgress"]),
    },
    {
        "error": st.one_of(st.none(), turn_errors),
        "startedAt": st.one_of(st.none(), st.integers(0, 2**40)),
        "durationMs": st.one_of(st.none(), st.integers(0, 2**31)),
    },
)


@given(turns)
def test_generated_turns_round_trip(payload: dict[str, Any]) -> None:
    assert converter.unstructure(strict.structure(payload, m.Turn)) == payload


@given(st.lists(user_inputs, max_size=4), ids)
def test_generated_turn_start_params_round_trip(inputs: list[Any], thread_id: str) -> None:
    payload = {"threadId": thread_id, "input": inputs}
    assert converter.unstructure(strict.structure(payload, m.TurnStartParams)) == payload


@given(with_optionals({"threadId": ids, "turn": turns}, {}))
def test_generated_turn_completed_notifications_round_trip(payload: dict[str, Any]) -> None:
    kind = NOTIFICATIONS["turn/completed"].params_type
    assert converter.unstructure(strict.structure(payload, kind)) == payload


@given(
    st.text(min_size=1, max_size=10).filter(
        lambda t: (
            t not in {"text", "image", "localImage", "audio", "localAudio", "skill", "mention"}
        )
    )
)
def test_any_unknown_user_input_tag_is_kept_raw(tag: str) -> None:
    raw = {"type": tag, "payload": 1}
    value = converter.structure(raw, m.UserInput)
    assert isinstance(value, m.UnknownUserInput)
    assert converter.unstructure(value) == raw
