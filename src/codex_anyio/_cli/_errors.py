"""How an error reaches the user of a command: one line on stderr and exit status 1.

``codex-anyio <command>: <what went wrong>: <its cause>``, never a traceback of a hundred lines
(``-v``/``--verbose`` prints the traceback too, for a bug report). The line names the error
(its own message for ours, which are written for users; the class name as well for anything
else, which is a bug or an OS error), the runtime's own reason when an app-server exited
(the ``Error: ...`` line of its stderr), and the cause the error carries when its message
does not already say it.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Final

from .._exceptions import CodexError, TransportClosedError

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["EXIT_ERROR", "EXIT_USAGE", "UsageError", "add_verbose", "one_line", "report"]

EXIT_ERROR: Final = 1
"""The exit status of a command that stopped on an error."""

EXIT_USAGE: Final = 2
"""The exit status of a command refused before it ran anything (as for a bad argument)."""


class UsageError(Exception):
    """A command cannot run as asked, found before it started anything (a variable that is
    not set, an empty stdin): one line, exit status :data:`EXIT_USAGE`, never a traceback."""


def add_verbose(parser: argparse.ArgumentParser, *, default: object = False) -> None:
    """``-v``/``--verbose`` on ``parser`` (a subcommand's passes ``argparse.SUPPRESS``, so
    ``codex-anyio -v demo`` and ``codex-anyio demo -v`` both work)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="on an error, print its full traceback as well as the one-line message",
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: what happened, the runtime's reason, the cause."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(one_line(leaf) for leaf in exc.exceptions)
    text = _first_line(exc)
    if not isinstance(exc, CodexError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if isinstance(exc, TransportClosedError):
        why = [line for line in exc.stderr_tail.splitlines() if line.startswith("Error")]
        if why and why[-1] not in text:
            text += f": {why[-1]}"
    cause = exc.__cause__
    if cause is not None and not _says(text, cause):
        text += f": {one_line(cause)}"
    return text


def _says(text: str, cause: BaseException) -> bool:
    """Whether ``text`` already tells ``cause`` (an OS error by its reason, as "No space left
    on device", which its own first line wraps in ``[Errno 28] ...``)."""
    if isinstance(cause, OSError) and cause.strerror and cause.strerror in text:
        return True
    return _first_line(cause) in text


def report(prog: str, exc: BaseException, *, verbose: bool = False) -> int:
    """Print ``exc`` for the user of ``prog`` (``codex-anyio demo``); :data:`EXIT_ERROR`."""
    if verbose:
        traceback.print_exception(exc)
    print(f"{prog}: {one_line(exc)}", file=sys.stderr, flush=True)
    return EXIT_ERROR
