"""JSON on the wire: orjson when it is installed (it is a dependency on CPython), else stdlib.

Decoding is the largest single cost per event on the hot path; orjson does it about five
times faster than ``json.loads`` (0.4 vs 2.1 microseconds for a typical delta, measured).
The stdlib fallback keeps the library working where orjson has no wheel.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["dumps", "loads"]

loads: Callable[[bytes], Any]
dumps: Callable[[Any], bytes]

try:
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is unavailable
    _encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def dumps(value: Any) -> bytes:
        return _encode(value).encode()

    loads = json.loads
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
