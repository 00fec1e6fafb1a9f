from pathlib import Path

from _bootstrap import runtime_config

from codex_anyio import Codex, LocalImageInput, TextInput

IMAGE_PATH = Path(__file__).resolve().parent / "assets" / "sample_scene.png"
if not IMAGE_PATH.exists():
    raise FileNotFoundError(f"Missing bundled image: {IMAGE_PATH}")

with Codex(config=runtime_config()) as codex:
    thread = codex.thread_start(model="gpt-5.4", config={"model_reasoning_effort": "high"})

    result = thread.turn(
        [
            TextInput("Read this local image and summarize what you see in 2 bullets."),
            LocalImageInput(str(IMAGE_PATH.resolve())),
        ]
    ).run()

    print("Status:", result.status)
    print(result.final_response)
