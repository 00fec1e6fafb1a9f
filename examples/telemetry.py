"""OpenTelemetry: a span per turn, per tool item, per server request and per client request.

Telemetry turns itself on when a real tracer (or meter) provider is set, here the SDK's with
the console exporter; ``AsyncCodex(telemetry=Telemetry(tracer_provider=...))`` passes one
explicitly instead, and ``telemetry=False`` turns it off. The console exporter prints one
line per span as it is exported (a turn's span is exported by a task of the client a moment
after ``run()`` returns; its end time is when the turn completed); the tree is printed at the
end. Needs ``opentelemetry-sdk``.
"""

from __future__ import annotations

import sys
from typing import Any

from _offline import run

from codex_anyio import AsyncCodex
from codex_anyio.testing import exec_command, function_call, message

try:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
except ImportError:
    print("this example needs the OpenTelemetry SDK: pip install opentelemetry-sdk")
    sys.exit(0)

ended: list[ReadableSpan] = []

SHOWN = (
    "codex.turn.status",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "codex.item.status",
    "codex.command.exit_code",
    "codex.server_request.decision",
)


def one_line(span: ReadableSpan) -> str:
    """The console exporter's format: one line per span (the default is a JSON document)."""
    ended.append(span)
    attributes = span.attributes or {}
    shown = " ".join(
        f"{key.rsplit('.', 1)[-1]}={attributes[key]}" for key in SHOWN if key in attributes
    )
    return f"span ended: {span.name} {shown}".rstrip() + "\n"


def print_tree() -> None:
    children: dict[Any, list[ReadableSpan]] = {}
    for span in ended:
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent, []).append(span)

    def show(span: ReadableSpan, depth: int) -> None:
        attributes = span.attributes or {}
        shown = " ".join(
            f"{key.rsplit('.', 1)[-1]}={attributes[key]}" for key in SHOWN if key in attributes
        )
        print(f"{'  ' * depth}{span.name} {shown}".rstrip())
        assert span.context is not None
        for child in sorted(
            children.get(span.context.span_id, []), key=lambda s: s.start_time or 0
        ):
            show(child, depth + 1)

    known = {span.context.span_id for span in ended if span.context is not None}
    for root in ended:
        if root.parent is None or root.parent.span_id not in known:
            show(root, 0)


async def order_status(order_id: str) -> str:
    """Look up an order's shipping status."""
    return f"order {order_id} has shipped"


async def main(codex: AsyncCodex) -> None:
    thread = await codex.thread_start(dynamic_tools=[order_status])
    with trace.get_tracer("my-agent").start_as_current_span("handle support ticket"):
        result = await thread.run("Where is order A-17? Then clean up.")
    print(result.final_response)


if __name__ == "__main__":
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(formatter=one_line)))
    trace.set_tracer_provider(provider)
    run(
        main,
        [
            function_call("order_status", {"order_id": "A-17"}),
            # An escalated command: nobody approves it, so it is declined (fail-closed).
            exec_command("rm -rf ./*", escalate=True),
            message("Order A-17 has shipped."),
        ],
        approval_policy="on-request",
    )
    provider.shutdown()
    print("span tree:")
    print_tree()
