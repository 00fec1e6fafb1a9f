from _bootstrap import runtime_config

from codex_anyio import Codex, TextInput

with Codex(config=runtime_config()) as codex:
    thread = codex.thread_start(model="gpt-5.4", config={"model_reasoning_effort": "high"})
    result = thread.turn(TextInput("Give 3 bullets about SIMD.")).run()

    print("thread_id:", thread.id)
    print("turn_id:", result.id)
    print("status:", result.status)
    if result.error is not None:
        print("error:", result.error)
    print("text:", result.final_response)
    print("items.count:", len(result.items))
    if result.usage is None:
        raise RuntimeError("missing usage for completed turn")
    print("usage.total_tokens:", result.usage.total.total_tokens)
