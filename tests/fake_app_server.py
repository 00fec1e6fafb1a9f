"""A scripted stand-in for ``codex app-server``, for the faults the real one cannot produce.

Run as ``python fake_app_server.py SCRIPT``, where SCRIPT is Python source executed with the
helpers below in scope: garbage lines, a 16 MiB line, a crash between two deltas,
notifications before a response, exact interleavings. Everything real (turns, approvals,
tools) is tested against the real runtime instead; keep this file small and stdlib-only.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

_stdin = sys.stdin.buffer
_stdout = sys.stdout.buffer

INITIALIZE_RESULT = {
    "userAgent": "fake_app_server/0.0.0 (test)",
    "codexHome": "/tmp/fake-codex-home",
    "platformFamily": "unix",
    "platformOs": "linux",
}


def raw(data: bytes) -> None:
    """Write bytes exactly as given (no newline added) and flush."""
    _stdout.write(data)
    _stdout.flush()


def send(message: Any) -> None:
    raw(json.dumps(message).encode() + b"\n")


def read() -> dict[str, Any]:
    """The next message from the client; exits quietly at EOF."""
    line = _stdin.readline()
    if not line:
        sys.exit(0)
    message: dict[str, Any] = json.loads(line)
    return message


def expect(method: str) -> dict[str, Any]:
    """Read until a message with ``method`` arrives (skipping others) and return it."""
    while True:
        message = read()
        if message.get("method") == method:
            return message


def reply(request: dict[str, Any], result: Any) -> None:
    send({"id": request["id"], "result": result})


def reply_error(request: dict[str, Any], code: int, message: str, data: Any = None) -> None:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    send({"id": request["id"], "error": error})


def notify(method: str, params: dict[str, Any]) -> None:
    send({"method": method, "params": params})


def stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def handshake() -> None:
    reply(expect("initialize"), INITIALIZE_RESULT)
    expect("initialized")


def turn(turn_id: str, status: str = "inProgress") -> dict[str, Any]:
    return {"id": turn_id, "items": [], "status": status, "error": None}


def delta(thread_id: str, turn_id: str, text: str, item_id: str = "msg-1") -> None:
    notify(
        "item/agentMessage/delta",
        {"threadId": thread_id, "turnId": turn_id, "itemId": item_id, "delta": text},
    )


def completed(thread_id: str, turn_id: str, status: str = "completed") -> None:
    notify("turn/completed", {"threadId": thread_id, "turn": turn(turn_id, status)})


def hold() -> None:
    """Stay alive until the client closes stdin."""
    while _stdin.readline():
        pass


def main() -> None:
    script = sys.argv[1]
    if os.path.exists(script):
        with open(script, encoding="utf-8") as f:
            script = f.read()
    namespace = {name: value for name, value in globals().items() if not name.startswith("_")}
    namespace["time"] = time
    exec(compile(script, "<fake app-server script>", "exec"), namespace)


if __name__ == "__main__":
    main()
