"""Developer tasks. `nox -s tests` is the command CI and the README use."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = None  # the interpreter nox itself runs on


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite on both AnyIO backends (asyncio and trio)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def ray(session: nox.Session) -> None:
    """The Ray executor's tests, inside a network namespace with only loopback.

    Ray's processes probe cloud metadata addresses and DNS at start-up; scripts/loopback-netns
    (needs root) gives them no route anywhere. Installing happens outside it (it needs the
    package index); the tests skip themselves anywhere but inside it.
    """
    session.install("-e", ".[test,ray]")
    session.run(
        "scripts/loopback-netns",
        "python",
        "-m",
        "pytest",
        "tests/test_batch_ray.py",
        *session.posargs,
        external=True,
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the layering contracts (lint-imports)."""
    session.install("ruff==0.17.6", "import-linter==2.17")
    session.run("ruff", "check", "src", "tests", "benchmarks", "scripts", "examples", "noxfile.py")
    session.run(
        "ruff",
        "format",
        "--check",
        "src",
        "tests",
        "benchmarks",
        "scripts",
        "examples",
        "noxfile.py",
    )
    # The import graph is read from the sources (nothing is imported): src/ on the path suffices.
    session.run("lint-imports", env={"PYTHONPATH": "src"})


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/, and on tests/type_checks/ (the public API as users type it)."""
    session.install("-e", ".[test]", "mypy>=1.10")
    session.run("mypy")
    session.run("mypy", "--strict", "tests/type_checks")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site with ``mkdocs build --strict`` into a temporary folder.

    Strict: a broken link or anchor, a reference to a name that does not exist, or a
    docstring the API reference cannot render fails the build. Offline: no plugin that
    downloads at build time (see mkdocs.yml). ``-- --site-dir DIR`` keeps the site somewhere.
    """
    session.install("-e", ".[docs]")
    site = session.posargs or ["--site-dir", str(Path(session.create_tmp()) / "site")]
    # mkdocs-material prints a banner about MkDocs 2.0 on every build unless told not to.
    session.run("mkdocs", "build", "--strict", *site, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session(python=PYTHON)
def codegen(session: nox.Session) -> None:
    """Regenerate schema/ from the pinned runtime, then the generated modules from schema/."""
    session.install("-e", ".", "ruff==0.17.6")
    session.run("python", "scripts/codegen.py", "--refresh-schema", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job: a real conversation against the real runtime and a scripted model."""
    session.install("-e", ".")
    session.run("codex-anyio", "demo", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks beside the official SDK and a raw loop (`-- --quick` for a short run)."""
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
