"""The thread-level API against the real runtime: listing, archiving, naming, models,
account, inputs, and start-up failures with the runtime's own message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_anyio import (
    AsyncCodex,
    CodexConfig,
    ImageInput,
    LocalImageInput,
    MentionInput,
    SkillInput,
    StartupError,
    TextInput,
)
from codex_anyio._api._inputs import to_wire_input
from codex_anyio.testing import message, scripted_env, write_codex_home

from .conftest import over_every_transport

pytestmark = pytest.mark.anyio


@over_every_transport
async def test_list_archive_unarchive_and_name_threads(scripted_codex: Any) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([message("hi")]) as s:
            codex = s.codex
            thread = await codex.thread_start()
            await thread.run("persist me")
            await thread.set_name("my thread")
            read = await thread.read()
            assert read.thread.name == "my thread"
            listed = await codex.thread_list(limit=10)
            assert thread.id in [t.id for t in listed.data]
            await codex.thread_archive(thread.id)
            archived = await codex.thread_list(archived=True)
            assert thread.id in [t.id for t in archived.data]
            restored = await codex.thread_unarchive(thread.id)
            assert restored.id == thread.id


async def test_models_and_account_are_typed(scripted_codex: Any) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([]) as s:
            models = await s.codex.models()
            assert isinstance(models.data, list)
            account = await s.codex.account()
            assert account.account is None  # no login in a scripted home


async def test_unknown_keyword_parameters_name_the_valid_ones(scripted_codex: Any) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([]) as s:
            with pytest.raises(TypeError, match=r"modle.*valid:.*model"):
                await s.codex.thread_start(modle="gpt")


async def test_a_list_of_inputs_reaches_the_model_in_order(scripted_codex: Any) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([message("seen")]) as s:
            thread = await s.codex.thread_start()
            await thread.run(["first part", TextInput("second part")])
            user = [
                part.get("text")
                for item in s.model.requests[0].body["input"]
                if item.get("role") == "user"
                for part in item["content"]
            ]
            assert "first part" in user
            assert "second part" in user


def test_inputs_map_to_the_wire_shapes() -> None:
    assert to_wire_input("hi") == [{"type": "text", "text": "hi"}]
    assert to_wire_input(
        [
            ImageInput("https://x/y.png"),
            LocalImageInput("/tmp/a.png"),
            SkillInput("skill", "/s"),
            MentionInput("file", "/f"),
        ]
    ) == [
        {"type": "image", "url": "https://x/y.png"},
        {"type": "localImage", "path": "/tmp/a.png"},
        {"type": "skill", "name": "skill", "path": "/s"},
        {"type": "mention", "name": "file", "path": "/f"},
    ]
    with pytest.raises(TypeError, match="cannot use int"):
        to_wire_input([1])  # type: ignore[list-item]


async def test_a_bad_config_fails_start_up_with_the_runtimes_own_message(tmp_path: Path) -> None:
    home = write_codex_home(
        tmp_path / "home", base_url="http://127.0.0.1:9/v1", approval_policy="untrusted"
    )
    config = CodexConfig(env=scripted_env(home), cwd=tmp_path)
    with anyio.fail_after(30), pytest.raises(StartupError) as caught:
        async with AsyncCodex(config):
            pytest.fail("a runtime with a rejected config started")
    assert caught.value.returncode not in (None, 0)
    assert "untrusted" in caught.value.stderr_tail
    assert "no longer supported" in str(caught.value)
