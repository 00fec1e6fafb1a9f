import asyncio

from _bootstrap import runtime_config

from codex_anyio import AsyncCodex


async def main() -> None:
    async with AsyncCodex(config=runtime_config()) as codex:
        print("server.name:", codex.metadata.serverInfo.name)
        print("server.version:", codex.metadata.serverInfo.version)
        print("platform:", codex.metadata.platformFamily, codex.metadata.platformOs)

        models = await codex.models(include_hidden=True)
        print("models.count:", len(models.data))
        for model in models.data[:5]:
            print("model:", model.id, model.model, model.hidden)


if __name__ == "__main__":
    asyncio.run(main())
