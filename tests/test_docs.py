"""The documentation site's sources: every public name is in the API reference, and the build
stays offline. ``nox -s docs`` builds the site itself (strict); these checks are the ones a
build cannot make: a name left out of the reference is no broken link."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import codex_anyio
import codex_anyio.batch
import codex_anyio.testing

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
MKDOCS = (ROOT / "mkdocs.yml").read_text()


def rendered() -> set[str]:
    """Every ``::: name`` of the reference pages."""
    text = "".join(page.read_text() for page in REFERENCE.glob("*.md"))
    return set(re.findall(r"^::: ([\w.]+)$", text, re.M))


def test_every_public_name_of_codex_anyio_has_an_entry_in_the_api_reference() -> None:
    assert {f"codex_anyio.{name}" for name in codex_anyio.__all__} - rendered() == set()


@pytest.mark.parametrize("module", [codex_anyio.batch, codex_anyio.testing])
def test_the_public_submodules_are_rendered_whole(module: object) -> None:
    assert getattr(module, "__name__", "") in rendered()


@pytest.mark.parametrize(
    "module", ["codex_anyio.gateway", "codex_anyio.trajectory", "codex_anyio.inspect"]
)
def test_every_public_name_of_the_gateway_packages_has_an_entry_in_the_api_reference(
    module: str,
) -> None:
    if module == "codex_anyio.inspect":
        pytest.importorskip("inspect_ai", reason="inspect_ai is not installed (extra: inspect)")
    names = importlib.import_module(module).__all__
    missing = [
        name for name in names if {f"{module}.{name}", f"codex_anyio.{name}"}.isdisjoint(rendered())
    ]
    assert missing == []


def test_the_reference_names_only_public_objects() -> None:
    private = [
        name
        for name in rendered()
        if any(part.startswith("_") and not part.endswith("__") for part in name.split("."))
    ]
    assert private == []


def test_the_docs_build_fetches_nothing() -> None:
    plugins = MKDOCS.split("\nplugins:\n", 1)[1].split("\n\n", 1)[0]
    # material's social plugin downloads fonts and renders cards; privacy downloads assets.
    assert not re.search(r"^\s*- (material/)?(social|privacy)\b", plugins, re.M)
    assert re.search(r"^  font: false$", MKDOCS, re.M)  # no web fonts in the pages either


def test_every_relative_link_of_the_readme_and_the_project_files_resolves() -> None:
    missing = [
        f"{name}: {target}"
        for name in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md")
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", (ROOT / name).read_text())
        if not (ROOT / target).exists()
    ]
    assert missing == []
