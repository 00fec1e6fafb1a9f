import asyncio

from _bootstrap import runtime_config

from codex_anyio import AsyncCodex


async def main() -> None:
    async with AsyncCodex(config=runtime_config()) as codex:
        thread = await codex.thread_start()
        result = await thread.run(
            "Improve the benchmark coverage in this repository.",
            goal=True,
        )
        print(result.final_response)


if __name__ == "__main__":
    asyncio.run(main())
