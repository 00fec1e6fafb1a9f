from _bootstrap import runtime_config

from codex_anyio import Codex, TextInput

with Codex(config=runtime_config()) as codex:
    print("Server:", codex.metadata.serverInfo.name, codex.metadata.serverInfo.version)

    thread = codex.thread_start(model="gpt-5.4", config={"model_reasoning_effort": "high"})
    turn = thread.turn(TextInput("Say hello in one sentence."))
    result = turn.run()

    print("Thread:", thread.id)
    print("Turn:", result.id)
    print("Text:", result.final_response.strip())
