from _bootstrap import runtime_config

from codex_anyio import Codex, ImageInput, TextInput

# The official example points at an https:// image; a test must not leave loopback.
REMOTE_IMAGE_URL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="

with Codex(config=runtime_config()) as codex:
    thread = codex.thread_start(model="gpt-5.4", config={"model_reasoning_effort": "high"})
    result = thread.turn(
        [
            TextInput("What is in this image? Give 3 bullets."),
            ImageInput(REMOTE_IMAGE_URL),
        ]
    ).run()

    print("Status:", result.status)
    print(result.final_response)
