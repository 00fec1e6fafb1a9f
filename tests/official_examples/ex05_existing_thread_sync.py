from _bootstrap import runtime_config

from codex_anyio import Codex, TextInput

with Codex(config=runtime_config()) as codex:
    # Create an initial thread and turn so we have a real thread to resume.
    original = codex.thread_start(model="gpt-5.4", config={"model_reasoning_effort": "high"})
    first = original.turn(TextInput("Tell me one fact about Saturn.")).run()
    print("Created thread:", original.id)

    # Resume the existing thread by ID.
    resumed = codex.thread_resume(original.id)
    second = resumed.turn(TextInput("Continue with one more fact.")).run()
    print(second.final_response)
