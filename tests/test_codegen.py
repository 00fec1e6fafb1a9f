"""The generated modules match schema/, and the registries cover the pinned schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import attrs

from codex_anyio._protocol._generated import models as m
from codex_anyio._protocol._generated.methods import ClientMethods
from codex_anyio._protocol._generated.registry import (
    CLIENT_NOTIFICATIONS,
    CLIENT_REQUESTS,
    NOTIFICATIONS,
    SERVER_REQUESTS,
)

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = "codex_app_server_protocol.schemas.json"


def methods(flavour: str, union: str) -> list[str]:
    bundle = json.loads((ROOT / "schema" / flavour / BUNDLE).read_text())["definitions"]
    return [v["properties"]["method"]["enum"][0] for v in bundle[union]["oneOf"]]


def test_the_committed_generated_modules_match_the_schema() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "codegen.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_schema_version_names_the_pinned_runtime() -> None:
    assert (ROOT / "schema" / "VERSION").read_text().strip() == "codex-cli 0.163.0"


def test_registries_cover_every_method_of_the_experimental_schema() -> None:
    assert list(CLIENT_REQUESTS) == methods("experimental", "ClientRequest")
    assert list(SERVER_REQUESTS) == methods("experimental", "ServerRequest")
    assert list(NOTIFICATIONS) == methods("experimental", "ServerNotification")
    assert (len(CLIENT_REQUESTS), len(SERVER_REQUESTS), len(NOTIFICATIONS)) == (172, 11, 85)
    assert CLIENT_NOTIFICATIONS == ("initialized",)


def test_experimental_marks_exactly_what_the_stable_schema_lacks() -> None:
    stable_client = set(methods("stable", "ClientRequest"))
    stable_server = set(methods("stable", "ServerRequest"))
    assert (len(stable_client), len(stable_server)) == (105, 10)
    assert {k for k, v in CLIENT_REQUESTS.items() if v.experimental} == (
        set(CLIENT_REQUESTS) - stable_client
    )
    assert [k for k, v in SERVER_REQUESTS.items() if v.experimental] == ["currentTime/read"]


def test_every_request_has_a_response_type_and_a_typed_method() -> None:
    for method, spec in CLIENT_REQUESTS.items():
        assert spec.response_type is not None, method
        name = "_".join(
            "".join("_" + c.lower() if c.isupper() else c for c in part).lstrip("_")
            for part in method.split("/")
        )
        assert callable(getattr(ClientMethods, name, None)), f"{method} -> {name}"
        doc = getattr(ClientMethods, name).__doc__ or ""
        assert ("Experimental" in doc) == spec.experimental, method


def test_method_names_are_snake_case_of_the_wire_method() -> None:
    for name in ("thread_start", "fs_read_file", "account_rate_limits_read", "turn_interrupt"):
        assert hasattr(ClientMethods, name)


def test_notification_scope_keys_agree_with_their_params_types() -> None:
    counts = {"turn": 0, "thread": 0, "global": 0}
    for method, spec in NOTIFICATIONS.items():
        wire = {f.metadata.get("wire") for f in attrs.fields(spec.params_type)}
        if spec.turn_id_key == "turnId":
            assert "turnId" in wire, method
        elif spec.turn_id_key == "turn.id":
            assert "turn" in wire, method
        if spec.thread_id_key == "threadId":
            assert "threadId" in wire, method
        elif spec.thread_id_key == "thread.id":
            assert "thread" in wire, method
        if spec.turn_id_key:
            counts["turn"] += 1
        elif spec.thread_id_key:
            counts["thread"] += 1
        else:
            counts["global"] += 1
    # PROTOCOL_NOTES count 32 thread-scoped by a top-level threadId; thread/started carries
    # its thread as thread.id, which makes it thread-scoped too rather than global.
    assert counts == {"turn": 31, "thread": 33, "global": 21}
    assert NOTIFICATIONS["thread/started"].thread_id_key == "thread.id"


def test_experimental_types_say_so_in_their_docstrings() -> None:
    assert "Experimental" in (m.CurrentTimeReadParams.__doc__ or "")
    assert "Experimental" not in (m.AgentMessageDeltaNotification.__doc__ or "")
