"""A replay fake app-server: streams N ``item/agentMessage/delta`` per turn as fast as it can.

Stdlib only, so every client under test can launch it with its own interpreter. The
``thread/start`` answer is the one the real runtime gave (from the recorded test corpus),
so clients that validate responses accept it. Usage: ``replay_server.py N``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "corpus" / "thread_start.jsonl"
BATCH = 2000


def thread_start_result() -> dict:
    for line in CORPUS.read_text().splitlines():
        message = json.loads(line)["message"]
        if "result" in message and "thread" in message["result"]:
            return message["result"]
    raise SystemExit("no thread/start result in the corpus")


def main() -> None:
    count = int(sys.argv[1])
    out = sys.stdout.buffer
    started = thread_start_result()
    thread_id = started["thread"]["id"]
    turns = 0

    def send(message: dict) -> None:
        out.write(json.dumps(message).encode() + b"\n")

    for raw in sys.stdin.buffer:
        message = json.loads(raw)
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            continue
        if method == "initialize":
            send(
                {
                    "id": request_id,
                    "result": {
                        "userAgent": "codex_bench/0.163.0 (replay)",
                        "codexHome": "/tmp",
                        "platformFamily": "unix",
                        "platformOs": "linux",
                    },
                }
            )
        elif method == "thread/start":
            send({"id": request_id, "result": started})
        elif method == "turn/start":
            turns += 1
            turn_id = f"turn-{turns}"
            turn = {"id": turn_id, "items": [], "status": "inProgress", "error": None}
            send({"id": request_id, "result": {"turn": turn}})
            send({"method": "turn/started", "params": {"threadId": thread_id, "turn": turn}})
            line = (
                json.dumps(
                    {
                        "method": "item/agentMessage/delta",
                        "params": {
                            "threadId": thread_id,
                            "turnId": turn_id,
                            "itemId": "msg-1",
                            "delta": "token ",
                        },
                    }
                ).encode()
                + b"\n"
            )
            for start in range(0, count, BATCH):
                out.write(line * min(BATCH, count - start))
            done = {**turn, "status": "completed"}
            send({"method": "turn/completed", "params": {"threadId": thread_id, "turn": done}})
        else:
            send({"id": request_id, "result": {}})
        out.flush()


if __name__ == "__main__":
    main()
