import asyncio

from _bootstrap import runtime_config

from codex_anyio import AsyncCodex, TextInput


async def main() -> None:
    async with AsyncCodex(config=runtime_config()) as codex:
        # Create an initial thread and turn so we have a real thread to resume.
        original = await codex.thread_start(model="gpt-5.4", config={"model_reasoning_effort": "high"})
        first_turn = await original.turn(TextInput("Tell me one fact about Saturn."))
        _ = await first_turn.run()
        print("Created thread:", original.id)

        # Resume the existing thread by ID.
        resumed = await codex.thread_resume(original.id)
        second_turn = await resumed.turn(TextInput("Continue with one more fact."))
        second = await second_turn.run()
        print(second.final_response)


if __name__ == "__main__":
    asyncio.run(main())
