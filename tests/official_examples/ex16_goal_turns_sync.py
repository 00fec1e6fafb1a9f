from _bootstrap import runtime_config

from codex_anyio import Codex

with Codex(config=runtime_config()) as codex:
    thread = codex.thread_start()
    result = thread.run("Improve the benchmark coverage in this repository.", goal=True)
    print(result.final_response)
