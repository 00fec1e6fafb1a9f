import asyncio

from _bootstrap import runtime_config

from codex_anyio import AsyncCodex, ImageInput, TextInput

# The official example points at an https:// image; a test must not leave loopback.
REMOTE_IMAGE_URL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="


async def main() -> None:
    async with AsyncCodex(config=runtime_config()) as codex:
        thread = await codex.thread_start(model="gpt-5.4", config={"model_reasoning_effort": "high"})
        turn = await thread.turn(
            [
                TextInput("What is in this image? Give 3 bullets."),
                ImageInput(REMOTE_IMAGE_URL),
            ]
        )
        result = await turn.run()

        print("Status:", result.status)
        print(result.final_response)


if __name__ == "__main__":
    asyncio.run(main())
