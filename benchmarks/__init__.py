"""Benchmarks: codex-anyio beside the official SDK and a raw loop, in one run (`nox -s bench`)."""

from __future__ import annotations

import compileall
from pathlib import Path

__all__ = ["cache_bytecode"]


def cache_bytecode() -> None:
    """Compile the package's and the benchmarks' sources to bytecode once, before any worker.

    An installed package comes with its bytecode (pip compiles it); an editable checkout run
    with ``PYTHONDONTWRITEBYTECODE=1`` (as on this machine) compiles every module from source
    in every new process: ~0.75 s of CPU per ``codex-anyio batch`` command, 6 ms per task at
    K = 128, which no user pays. Workers only read bytecode, so the variable may stay set.
    """
    root = Path(__file__).resolve().parent.parent
    for folder in (root / "src", root / "benchmarks"):
        compileall.compile_dir(folder, quiet=1)
