"""The scripted model in a process of its own, so it never competes with the client measured.

``python -m benchmarks.model_server instant|stall``: prints ``{"base_url": ...}`` and then one
``{"abandoned_at": <unix time>}`` line each time the runtime drops a stream; exits when its
stdin closes.
"""

from __future__ import annotations

import json
import sys
import time

import anyio

from codex_anyio.testing import Exchange, RecordedRequest, Reply, ScriptedModel, message, stall


async def main(mode: str) -> None:
    def script(request: RecordedRequest) -> Reply:
        return message("ok", deltas=1) if mode == "instant" else stall(message("x", deltas=1))

    async with ScriptedModel(script) as model, anyio.create_task_group() as tg:
        print(json.dumps({"base_url": model.base_url}), flush=True)

        async def report(exchange: Exchange) -> None:
            await exchange.abandoned.wait()
            print(json.dumps({"abandoned_at": time.time()}), flush=True)

        async def watch() -> None:
            seen = 0
            while True:
                await model.wait_for_requests(seen + 1)
                for exchange in model.exchanges[seen:]:
                    tg.start_soon(report, exchange)
                seen = len(model.exchanges)

        tg.start_soon(watch)
        await anyio.to_thread.run_sync(sys.stdin.read)
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "instant")
