import asyncio

from _bootstrap import runtime_config

from codex_anyio import AsyncCodex, TextInput


async def main() -> None:
    async with AsyncCodex(config=runtime_config()) as codex:
        thread = await codex.thread_start(model="gpt-5.4", config={"model_reasoning_effort": "high"})
        turn = await thread.turn(TextInput("Give 3 bullets about SIMD."))
        result = await turn.run()
        persisted = await thread.read(include_turns=True)
        persisted_turn = next(
            (turn for turn in persisted.thread.turns or [] if turn.id == result.id),
            None,
        )

        print("thread_id:", thread.id)
        print("turn_id:", result.id)
        print("status:", result.status)
        if result.error is not None:
            print("error:", result.error)
        print("text:", result.final_response)
        print(
            "persisted.items.count:",
            0 if persisted_turn is None else len(persisted_turn.items or []),
        )
        if result.usage is None:
            raise RuntimeError("missing usage for completed turn")
        print("usage.total_tokens:", result.usage.total.total_tokens)


if __name__ == "__main__":
    asyncio.run(main())
