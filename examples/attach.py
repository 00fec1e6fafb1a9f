"""Attach to an app-server that is already running (in a sandbox, or a shared daemon).

Offline, the real runtime is started listening on a loopback WebSocket with a capability
token (as ``codex-anyio serve`` does) and two clients attach to it one after the other: closing
a client closes its connection, never the server. ``--connect URL --token-file FILE`` attaches
to your own server instead (``ws://``, ``wss://`` or ``unix://``).
"""

from __future__ import annotations

import sys

import anyio

from codex_anyio import AsyncCodex, CodexConfig
from codex_anyio.testing import message, open_scripted_codex


async def ask(config: CodexConfig, prompt: str) -> None:
    async with AsyncCodex(config) as codex:
        thread = await codex.thread_start()
        result = await thread.run(prompt)
        print(f"{config.connect} -> {result.final_response}")


async def main() -> None:
    if "--connect" in sys.argv:
        url = sys.argv[sys.argv.index("--connect") + 1]
        token_file = None
        if "--token-file" in sys.argv:
            token_file = sys.argv[sys.argv.index("--token-file") + 1]
        await ask(CodexConfig(connect=url, token_file=token_file), "Say hello in five words.")
        return
    script = [message("Hello from the first client."), message("And from the second.")]
    async with open_scripted_codex(script, transport="ws") as scripted:
        assert scripted.server is not None
        print("server listening on", scripted.server.url.rsplit(":", 1)[0] + ":PORT")
        for prompt in ("first", "second"):
            await ask(scripted.server.client_config(), prompt)
        print("server still serving:", not scripted.codex.client.closed)


if __name__ == "__main__":
    anyio.run(main, backend="trio" if "--trio" in sys.argv else "asyncio")
