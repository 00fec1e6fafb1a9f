"""``codex-anyio`` and ``python -m codex_anyio``: the command line lives in ``_cli``."""

from __future__ import annotations

import sys

from ._cli._main import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
