"""Newline framing of the app-server's stdout: bytes in, complete lines out.

The app-server writes one JSON object per line. Framing splits on ``b"\\n"`` only, never on
``str.splitlines`` boundaries, so U+2028/U+2029 or a lone ``\\r`` inside a JSON string can
never split a message, and it works on raw chunks whatever their boundaries. There is no
64 KiB readline limit (the bug that crashed most community clients on a command's long
output): a line may be as long as ``max_line_bytes``, a bound that exists only so a runaway
peer cannot take all memory. The partial line is kept as a list of chunks and joined once, so
a 16 MiB line costs O(n), not O(n^2).
"""

from __future__ import annotations

from .._exceptions import ProtocolError

__all__ = ["DEFAULT_MAX_LINE_BYTES", "LineSplitter"]

DEFAULT_MAX_LINE_BYTES = 256 * 1024 * 1024
"""Largest accepted line. A command's full output arrives in one line; 256 MiB is far above
anything the runtime sends while still being a bound."""


class LineSplitter:
    """Incremental splitter: :meth:`feed` returns the lines a chunk completes."""

    __slots__ = ("_max_line_bytes", "_parts", "_pending_size")

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._max_line_bytes = max_line_bytes
        self._parts: list[bytes] = []
        self._pending_size = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add ``chunk``; return every line it completes (without the newline).

        Empty lines are dropped here rather than handed to the JSON decoder (a trailing
        ``\\r`` from a CRLF peer is JSON whitespace and needs no special case).

        :raises ProtocolError: if an unterminated line grows past ``max_line_bytes``.
        """
        if b"\n" not in chunk:
            self._parts.append(chunk)
            self._pending_size += len(chunk)
            if self._pending_size > self._max_line_bytes:
                self._parts.clear()
                self._pending_size = 0
                raise ProtocolError(
                    f"a line from the app-server exceeded max_line_bytes={self._max_line_bytes}"
                )
            return []
        lines = chunk.split(b"\n")
        if self._parts:
            self._parts.append(lines[0])
            lines[0] = b"".join(self._parts)
            self._parts.clear()
        tail = lines.pop()
        self._pending_size = len(tail)
        if tail:
            self._parts.append(tail)
        if not all(lines):
            lines = [line for line in lines if line]
        return lines

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete line held back, waiting for its newline."""
        return self._pending_size
