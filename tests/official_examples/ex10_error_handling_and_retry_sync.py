from _bootstrap import runtime_config

from codex_anyio import (
    Codex,
    JsonRpcError,
    ServerBusyError,
    TextInput,
    retry_on_overload,
)
from codex_anyio.types import TurnStatus

with Codex(config=runtime_config()) as codex:
    thread = codex.thread_start(model="gpt-5.4", config={"model_reasoning_effort": "high"})

    try:
        result = retry_on_overload(
            lambda: thread.turn(TextInput("Summarize retry best practices in 3 bullets.")).run(),
            max_attempts=3,
            initial_delay_s=0.25,
            max_delay_s=2.0,
        )
    except ServerBusyError as exc:
        print("Server overloaded after retries:", exc.message)
        print("Text:")
    except JsonRpcError as exc:
        print(f"JSON-RPC error {exc.code}: {exc.message}")
        print("Text:")
    else:
        if result.status == TurnStatus.failed:
            print("Turn failed:", result.error)
        print("Text:", result.final_response)
