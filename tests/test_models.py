"""The generated models round-trip real traffic exactly and stay forward compatible."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codex_anyio._protocol._generated import models as m
from codex_anyio._protocol._generated.converter import converter, make_converter
from codex_anyio._protocol._generated.registry import (
    CLIENT_REQUESTS,
    NOTIFICATIONS,
    SERVER_REQUESTS,
)
from codex_anyio._protocol._model import Model

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


# -- the generated classes: attrs to every caller, methods written out ahead of time ------------


def test_importing_the_package_builds_no_attrs_fields() -> None:
    """Fields are built on first use: import loads bytecode and runs no class decorator."""
    probe = (
        "import codex_anyio\n"
        "from codex_anyio._protocol._generated import models as m\n"
        "print(sum('__attrs_attrs__' in vars(c) for c in m.CLASSES))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


def test_asking_the_base_class_for_its_fields_does_not_hide_the_models_fields() -> None:
    probe = (
        "import attrs\n"
        "from codex_anyio._protocol._model import Model\n"
        "from codex_anyio._protocol._generated import models as m\n"
        "assert attrs.fields(Model) == ()\n"
        "print(len(attrs.fields(m.Turn)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 3


def test_enums_refuse_a_value_that_is_not_a_string() -> None:
    with pytest.raises(ValueError, match="TurnStatus"):
        m.TurnStatus(3)  # type: ignore[arg-type]


def test_models_are_attrs_classes_with_the_wire_names_in_field_metadata() -> None:
    assert attrs.has(m.Turn)
    status = attrs.fields(m.Turn).status
    assert status.type is m.TurnStatus
    assert dict(status.metadata) == {"wire": "status", "required": True}
    started = attrs.fields(m.Turn).started_at
    assert (started.default, started.metadata["wire"]) == (None, "startedAt")


def test_explicit_nulls_are_remembered_outside_the_fields() -> None:
    turn = m.Turn.model_validate({"id": "t", "items": [], "status": "completed", "error": None})
    assert "_wire_nulls" not in {f.name for f in attrs.fields(m.Turn)}
    assert "_wire_nulls" not in attrs.asdict(turn)
    assert turn == m.Turn(id="t", items=[], status=m.TurnStatus.completed)
    error = m.TurnError.model_validate({"message": "boom", "additionalDetails": None})
    assert (error, hash(error)) == (m.TurnError(message="boom"), hash(m.TurnError(message="boom")))


def test_models_are_frozen_keyword_only_and_evolve() -> None:
    error = m.TurnError(message="boom")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        error.message = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        m.TurnError("boom")  # type: ignore[misc]
    assert attrs.evolve(error, message="other") == m.TurnError(message="other")
    assert repr(error).startswith("TurnError(message='boom', additional_details=None, ")


def test_models_pickle_and_copy_with_their_explicit_nulls() -> None:
    wire = {"id": "t", "items": [], "status": "completed", "error": None}
    turn = m.Turn.model_validate(wire)
    for clone in (pickle.loads(pickle.dumps(turn)), copy.copy(turn), copy.deepcopy(turn)):
        assert clone == turn
        assert clone.to_wire() == wire


# -- enums --------------------------------------------------------------------------------------


def test_enum_members_have_the_official_names_and_equal_their_wire_strings() -> None:
    status = m.Turn.model_validate({"id": "t", "items": [], "status": "inProgress"}).status
    assert status is m.TurnStatus.in_progress
    assert status == "inProgress"
    assert status.value == "inProgress"
    assert (str(status), f"{status}") == ("inProgress", "inProgress")
    assert m.ReasoningEffort.high.value == "high"


def test_an_unknown_enum_value_becomes_a_pseudo_member_and_round_trips() -> None:
    wire = {"id": "t", "items": [], "status": "pausedByTheFuture"}
    status = m.Turn.model_validate(wire).status
    assert isinstance(status, m.TurnStatus)
    assert status == "pausedByTheFuture"
    assert status not in list(m.TurnStatus)
    assert m.Turn.model_validate(wire).to_wire() == wire


def test_a_plain_string_given_for_an_enum_goes_out_as_it_is() -> None:
    assert m.Turn(id="t", items=[], status="completed").to_wire()["status"] == "completed"  # type: ignore[arg-type]


# -- pydantic-named methods ---------------------------------------------------------------------


def test_model_dump_by_default_has_every_field_under_its_python_name() -> None:
    turn = m.Turn.model_validate({"id": "t", "items": [], "status": "completed", "startedAt": 5})
    dumped = turn.model_dump()
    assert dumped["started_at"] == 5
    assert dumped["completed_at"] is None
    assert dumped["status"] is m.TurnStatus.completed
    assert turn.model_dump(exclude_none=True) == {
        "id": "t",
        "items": [],
        "status": "completed",
        "started_at": 5,
    }


def test_model_dump_by_alias_of_the_set_fields_in_json_mode_is_the_wire_dict() -> None:
    wire = {"id": "t", "items": [], "status": "completed", "error": None, "startedAt": 5}
    turn = m.Turn.model_validate(wire)
    assert turn.model_dump(by_alias=True, exclude_unset=True, mode="json") == wire
    assert json.loads(turn.model_dump_json(by_alias=True, exclude_unset=True)) == wire
    assert m.Turn.model_validate_json(json.dumps(wire)) == turn
    assert m.Turn.model_validate(turn) is turn


def test_an_unknown_union_member_dumps_as_its_raw_payload() -> None:
    raw = {"type": "holographicMessage", "id": "x"}
    note = m.ItemCompletedNotification.model_validate(
        {"threadId": "t", "turnId": "u", "item": raw, "completedAtMs": 1}
    )
    assert note.model_dump()["item"] == raw


@pytest.mark.parametrize(("label", "kind", "payload"), CASES, ids=[c[0] for c in CASES])
def test_real_messages_dump_back_to_the_wire_through_the_pydantic_names(
    label: str, kind: Any, payload: Any
) -> None:
    if not (isinstance(kind, type) and issubclass(kind, Model)):
        pytest.skip("a union alias: no class methods")
    value = kind.model_validate(payload)
    assert value.to_wire() == payload
    assert value.model_dump(by_alias=True, exclude_unset=True, mode="json") == payload


FAST = [c for c in CASES if "_from_wire" in getattr(c[1], "__dict__", {})]


def test_the_hot_notifications_have_a_written_out_structure_hook() -> None:
    for method in ("item/agentMessage/delta", "item/reasoning/textDelta", "warning"):
        assert "_from_wire" in vars(NOTIFICATIONS[method].params_type), method
    kind = NOTIFICATIONS["item/agentMessage/delta"].params_type
    assert converter.get_structure_hook(kind) == kind._from_wire
    assert strict.get_structure_hook(kind) != kind._from_wire  # detailed validation: cattrs'


@pytest.mark.parametrize(("label", "kind", "payload"), FAST, ids=[c[0] for c in FAST])
def test_the_written_out_hook_builds_what_the_generic_one_builds(
    label: str, kind: Any, payload: Any
) -> None:
    fast, generic = kind._from_wire(payload), strict.structure(payload, kind)
    assert fast == generic
    assert getattr(fast, "_wire_nulls", None) == getattr(generic, "_wire_nulls", None)
    assert converter.unstructure(fast) == payload


@pytest.mark.parametrize(
    "payload",
    [{"message": "m"}, {"message": "m", "threadId": None}, {"message": "m", "threadId": "t"}],
)
def test_the_written_out_hook_keeps_absent_optionals_absent_and_nulls_null(
    payload: dict[str, Any],
) -> None:
    kind = NOTIFICATIONS["warning"].params_type
    fast = kind._from_wire(payload)
    assert fast == strict.structure(payload, kind)
    assert converter.unstructure(fast) == payload


def test_the_valid_keywords_of_a_params_type_do_not_include_wire_nulls() -> None:
    from codex_anyio._api._thread import _wire_params

    with pytest.raises(TypeError, match="valid: ") as caught:
        _wire_params(m.ThreadStartParams, {}, {"modle": "x"})
    assert "_wire_nulls" not in str(caught.value)
    assert "model" in str(caught.value)


def test_model_validate_also_takes_python_names_at_any_depth() -> None:
    wire = {
        "threadId": "t",
        "turnId": "u",
        "item": {"type": "agentMessage", "id": "i", "text": "hi"},
        "completedAtMs": 1,
    }
    note = m.ItemCompletedNotification.model_validate(wire)
    assert m.ItemCompletedNotification.model_validate(note.model_dump()) == note
    turn = m.Turn.model_validate(
        {
            "id": "t",
            "items": [],
            "status": "failed",
            "error": {"message": "x", "codex_error_info": None},
        }
    )
    assert turn.error is not None
    assert turn.error.to_wire() == {"message": "x", "codexErrorInfo": None}


@given(turns)
def test_generated_turns_round_trip_through_the_pydantic_names(payload: dict[str, Any]) -> None:
    turn = m.Turn.model_validate(payload)
    assert turn.model_dump(by_alias=True, exclude_unset=True, mode="json") == payload
    assert m.Turn.model_validate(turn.model_dump()) == turn
    assert m.Turn.model_validate_json(turn.model_dump_json()) == turn


# -- the compiled structure hooks of the generated records ---------------------------------------


@pytest.mark.parametrize(("label", "kind", "payload"), CASES, ids=[c[0] for c in CASES])
def test_the_compiled_hook_builds_what_the_detailed_one_builds(
    label: str, kind: Any, payload: Any
) -> None:
    fast, generic = converter.structure(payload, kind), strict.structure(payload, kind)
    assert fast == generic
    assert getattr(fast, "_wire_nulls", None) == getattr(generic, "_wire_nulls", None)
    assert converter.unstructure(fast) == payload


@given(with_optionals({"threadId": ids, "turn": turns}, {}))
def test_compiled_hooks_build_generated_turns_as_the_detailed_ones_do(
    payload: dict[str, Any],
) -> None:
    kind = NOTIFICATIONS["turn/completed"].params_type
    fast, generic = converter.structure(payload, kind), strict.structure(payload, kind)
    assert fast == generic
    assert fast.turn._wire_nulls == generic.turn._wire_nulls
    assert converter.unstructure(fast) == payload


def test_every_generated_record_gets_a_compiled_hook() -> None:
    from codex_anyio._protocol._convert import compilable

    records = [c for c in m.CLASSES if compilable(c) and "_from_wire" not in vars(c)]
    assert len(records) > 500
    for cls in records:
        hook = converter.get_structure_hook(cls)
        assert hook.__code__.co_filename == f"<structure {cls.__qualname__}>", cls


def test_a_compiled_hook_refuses_a_missing_required_field_and_ignores_unknown_keys() -> None:
    with pytest.raises(KeyError, match="status"):
        converter.structure({"id": "t", "items": []}, m.Turn)
    wire = {"id": "t", "items": [], "status": "completed", "fromTheFuture": 1}
    assert converter.structure(wire, m.Turn) == m.Turn(id="t", items=[], status="completed")


def test_an_optional_model_is_structured_through_its_own_hook_or_is_none() -> None:
    assert converter.structure(None, m.TurnError | None) is None
    error = converter.structure({"message": "x", "additionalDetails": None}, m.TurnError | None)
    assert error == m.TurnError(message="x")
    assert error._wire_nulls == {"additionalDetails"}


@pytest.mark.parametrize(("label", "kind", "payload"), CASES[::7], ids=[c[0] for c in CASES[::7]])
def test_a_hook_built_on_the_mutable_twin_returns_the_frozen_record_itself(
    label: str, kind: Any, payload: Any
) -> None:
    """The hooks build on ``builder_of(kind)`` and then assign ``__class__``: what comes out
    must be exactly the record (frozen, hashable, picklable), the twin nowhere in sight."""
    from attrs.exceptions import FrozenInstanceError

    from codex_anyio._protocol._model import builder_of

    value = converter.structure(payload, kind)
    if not isinstance(value, Model) or value._UNKNOWN or not value._SPEC:
        return
    assert type(value) is type(strict.structure(payload, kind))
    assert not isinstance(value, builder_of(type(value)))
    assert not issubclass(builder_of(type(value)), type(value))
    name = attrs.fields(type(value))[0].name
    with pytest.raises(FrozenInstanceError):
        setattr(value, name, None)
    with pytest.raises(FrozenInstanceError):
        delattr(value, name)
    assert pickle.loads(pickle.dumps(value)) == value


NOTES = [c for c in CASES if c[0].split(" ", 1)[-1] in NOTIFICATIONS]


@pytest.mark.parametrize(("label", "kind", "payload"), NOTES, ids=[c[0] for c in NOTES])
def test_a_notifications_typed_params_are_what_the_detailed_converter_builds(
    label: str, kind: Any, payload: Any
) -> None:
    """``Notification.params`` calls a record's own hook with the raw params alone (its type
    argument unused) and any other hook with the type: either way, the same record."""
    from codex_anyio._rpc._notifications import Notification

    method = label.split(" ", 1)[1]
    note = Notification(method, payload)
    assert note.typed
    assert note.params == strict.structure(payload, kind)


def test_only_a_records_own_hooks_are_called_without_their_type() -> None:
    from codex_anyio._rpc._notifications import _own_hook

    delta = NOTIFICATIONS["item/agentMessage/delta"].params_type
    completed = NOTIFICATIONS["turn/completed"].params_type
    assert _own_hook(converter.get_structure_hook(delta), delta)  # written out
    assert _own_hook(converter.get_structure_hook(completed), completed)  # compiled
    assert not _own_hook(converter.get_structure_hook(completed), delta)
    assert not _own_hook(strict.get_structure_hook(completed), completed)  # cattrs'
