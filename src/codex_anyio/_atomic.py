"""Whole files written atomically: a reader (or a resumed run) sees the old file or the new
one, never half of one.

The batch writes one cassette and one trajectory per task; a run killed while writing one
must not leave a torn file that a later run would take for the task's record. The bytes go
to a temporary file in the same folder (so the rename stays on one file system), are
flushed to disk, and replace the target in one ``os.replace``.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import suppress
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` (replacing it) atomically; return the path."""
    target = Path(path)
    descriptor, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise
    return target
