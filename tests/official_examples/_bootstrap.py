"""Stands in for the official examples' ``_bootstrap``: ``runtime_config()`` returns the config
of the scripted runtime the test started (the official one returns a config for the real
runtime with a real account). Everything else in a port is the official example with only its
``openai_codex`` import lines changed."""

from __future__ import annotations

from codex_anyio import CodexConfig

CONFIG: CodexConfig | None = None


def runtime_config() -> CodexConfig:
    assert CONFIG is not None, "the test sets CONFIG before running an example"
    return CONFIG
