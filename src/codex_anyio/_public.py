"""Public names say they live where users import them from.

A class or function defined in a private layer (``codex_anyio._api._codex``) and exported by
a public module (``codex_anyio``) gets that module as its ``__module__``, so tracebacks,
reprs, documentation and pickles name ``codex_anyio.AsyncCodex``, and the layers can move
without changing what users see. Every public module calls :func:`publish` once, last.
"""

from __future__ import annotations

from typing import Any

__all__ = ["publish"]


def _private(module: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in module.split("."))


def publish(namespace: dict[str, Any], *, top: bool = False) -> None:
    """Rehome the names of ``namespace["__all__"]`` that a private module defined; with
    ``top`` (``codex_anyio`` itself), also those a product package published first: a name
    the README imports from ``codex_anyio`` says it lives there."""
    public = namespace["__name__"]
    for name in namespace["__all__"]:
        obj = namespace.get(name)  # a name resolved lazily (``__getattr__``) is not there yet
        home = getattr(obj, "__module__", None)
        if isinstance(home, str) and (_private(home) or (top and home.startswith(public + "."))):
            try:
                obj.__module__ = public
            except (AttributeError, TypeError):  # pragma: no cover - a builtin or a slot
                pass
