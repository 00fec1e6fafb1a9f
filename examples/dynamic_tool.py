"""Dynamic tools: the model calls your async Python functions.

The JSON Schema comes from the signature and the description from the docstring. If the
tool raises, the model is told it failed (``success: false``); the turn goes on.
"""

from __future__ import annotations

from _offline import run

from codex_anyio import AsyncCodex
from codex_anyio.testing import function_call, message


async def order_status(order_id: str, include_items: bool = False) -> dict[str, object]:
    """Look up an order's shipping status."""
    return {"order": order_id, "status": "shipped", "items": ["book"] if include_items else []}


async def main(codex: AsyncCodex) -> None:
    thread = await codex.thread_start(dynamic_tools=[order_status])
    result = await thread.run("Where is order A-17?")
    print(result.final_response)


if __name__ == "__main__":
    run(
        main,
        [
            function_call("order_status", {"order_id": "A-17"}),
            message("Order A-17 has shipped."),
        ],
    )
