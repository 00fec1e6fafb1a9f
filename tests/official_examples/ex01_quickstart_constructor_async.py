import asyncio

from _bootstrap import runtime_config

from codex_anyio import AsyncCodex, TextInput


async def main() -> None:
    async with AsyncCodex(config=runtime_config()) as codex:
        print("Server:", codex.metadata.serverInfo.name, codex.metadata.serverInfo.version)

        thread = await codex.thread_start(model="gpt-5.4", config={"model_reasoning_effort": "high"})
        turn = await thread.turn(TextInput("Say hello in one sentence."))
        result = await turn.run()
        print("Status:", result.status)
        print("Text:", result.final_response)


if __name__ == "__main__":
    asyncio.run(main())
