"""OpenTelemetry spans and metrics against the real runtime, and the opt-in wire log.

Providers are passed explicitly (``Telemetry(...)``) so no test touches the global ones, which
a process can set only once; the global-provider path runs in a subprocess.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.context import Context
from opentelemetry.metrics import NoOpMeter, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from codex_anyio import (
    ApprovalPolicy,
    AsyncCodex,
    Codex,
    Handlers,
    InvalidRequestError,
    Telemetry,
    TurnFailedError,
    result_only_opt_outs,
)
from codex_anyio._redact import TOO_DEEP
from codex_anyio._rpc._usage import TurnTally
from codex_anyio._wire._wire_log import REDACTED, redact, redact_line
from codex_anyio.telemetry._telemetry import resolve, token_counts
from codex_anyio.testing import (
    exec_command,
    failed,
    function_call,
    message,
    scripted_runtime,
    stall,
)

from .conftest import fake_config

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
TOUCH = "touch created-by-the-agent.txt"


class TurnSpansEnded(SpanProcessor):
    """Lets a test wait for a turn's span to end (the watcher task ends it, not the caller)."""

    def __init__(self) -> None:
        self.count = 0
        self._event = anyio.Event()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if span.name == "codex.turn":
            self.count += 1
            self._event.set()

    async def wait(self, count: int = 1) -> None:
        while self.count < count:
            self._event = anyio.Event()
            await self._event.wait()


class Recorder:
    """An SDK tracer and meter provider with in-memory exporters, passed to one client."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.turns_ended = TurnSpansEnded()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.tracer_provider.add_span_processor(self.turns_ended)
        self.metrics = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])
        self.telemetry = Telemetry(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def finished(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.finished(name)
        assert len(found) == 1, [span.name for span in self.spans.get_finished_spans()]
        return found[0]

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        data = self.metrics.get_metrics_data()
        found: list[tuple[dict[str, Any], Any]] = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == metric:
                        for point in item.data.data_points:
                            value = getattr(point, "value", None)
                            if value is None:
                                value = point.count  # type: ignore[union-attr]
                            found.append((dict(point.attributes or {}), value))
        return found


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


async def test_a_turn_with_a_tool_call_and_an_approval_makes_the_expected_span_tree(
    scripted_codex: Any,
) -> None:
    async def lookup_order(order_id: str) -> str:
        """Look up an order's status."""
        return f"order {order_id} has shipped"

    recorder = Recorder()
    script = [
        function_call("lookup_order", {"order_id": "42"}),
        exec_command(TOUCH, escalate=True),
        message("Done."),
    ]
    handlers = Handlers(approvals=ApprovalPolicy.accept_all())
    with anyio.fail_after(60):
        async with scripted_codex(
            script, approval_policy="on-request", handlers=handlers, telemetry=recorder.telemetry
        ) as s:
            thread = await s.codex.thread_start(dynamic_tools=[lookup_order])
            tracer = recorder.tracer_provider.get_tracer("the-app")
            with tracer.start_as_current_span("the app's request"):
                result = await thread.run("ship it")
            await recorder.turns_ended.wait()

    app = recorder.one("the app's request")
    turn = recorder.one("codex.turn")
    assert parent_of(turn) == span_id(app)
    assert app.end_time is not None
    assert turn.end_time is not None
    assert turn.end_time <= app.end_time  # it ends when run() sees the end, not later
    assert turn.attributes is not None
    assert dict(turn.attributes) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.request.model": "mock-model",
        "gen_ai.provider.name": "mock",
        "gen_ai.conversation.id": thread.id,
        "codex.turn.id": result.id,
        "codex.turn.status": "completed",
        "codex.turn.duration_ms": result.duration_ms,
        # Three model calls of 10 input and 5 output tokens each (the scripted model's usage).
        "gen_ai.usage.input_tokens": 30,
        "gen_ai.usage.output_tokens": 15,
        "codex.usage.cached_input_tokens": 0,
        "codex.usage.reasoning_output_tokens": 0,
    }
    assert turn.status.status_code is StatusCode.UNSET

    start = recorder.one("turn/start")
    assert parent_of(start) == span_id(turn)
    assert start.attributes == {"rpc.system": "jsonrpc", "rpc.method": "turn/start"}

    tool = recorder.one("execute_tool lookup_order")
    shell = recorder.one("execute_tool shell")
    for item in (tool, shell):
        assert parent_of(item) == span_id(turn)
        assert item.attributes is not None
        assert item.attributes["gen_ai.operation.name"] == "execute_tool"
        assert item.attributes["codex.item.status"] == "completed"
    assert tool.attributes is not None
    assert shell.attributes is not None
    assert tool.attributes["codex.item.type"] == "dynamicToolCall"
    assert tool.attributes["codex.tool.success"] is True
    assert shell.attributes["codex.item.type"] == "commandExecution"
    assert shell.attributes["codex.command.exit_code"] == 0

    call = recorder.one("codex.server_request item/tool/call")
    approval = recorder.one("codex.server_request item/commandExecution/requestApproval")
    assert parent_of(call) == span_id(tool)
    assert parent_of(approval) == span_id(shell)
    for request in (call, approval):
        assert request.attributes is not None
        assert request.attributes["codex.turn.id"] == result.id
    assert call.attributes is not None
    assert approval.attributes is not None
    assert call.attributes["gen_ai.tool.name"] == "lookup_order"
    assert call.attributes["gen_ai.tool.call.id"] == tool.attributes["gen_ai.tool.call.id"]
    assert call.attributes["codex.server_request.decision"] == "success"
    assert approval.attributes["codex.item.id"] == shell.attributes["codex.item.id"]
    assert approval.attributes["codex.server_request.decision"] == "accept"


async def test_metrics_count_the_turn_its_tokens_and_its_server_requests(
    scripted_codex: Any,
) -> None:
    recorder = Recorder()
    script = [exec_command(TOUCH, escalate=True), message("ok")]
    with anyio.fail_after(60):
        async with scripted_codex(
            script, approval_policy="on-request", telemetry=recorder.telemetry
        ) as s:
            thread = await s.codex.thread_start()
            await thread.run("make a file")
            await recorder.turns_ended.wait()

    labels = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.request.model": "mock-model",
        "gen_ai.provider.name": "mock",
    }
    assert recorder.points("codex.turn.duration") == [
        ({**labels, "codex.turn.status": "completed"}, 1)
    ]
    tokens = {
        attrs["gen_ai.token.type"]: value for attrs, value in recorder.points("codex.token.usage")
    }
    assert tokens == {"input": 20, "output": 10}
    assert recorder.points("codex.turns.active") == [(labels, 0)]
    # No handler: the approval is declined (fail-closed), and counted so.
    assert recorder.points("codex.server_requests") == [
        (
            {
                "codex.server_request.method": "item/commandExecution/requestApproval",
                "codex.server_request.decision": "decline",
            },
            1,
        )
    ]


async def test_a_later_turn_on_a_thread_counts_only_its_own_tokens(scripted_codex: Any) -> None:
    recorder = Recorder()
    with anyio.fail_after(60):
        async with scripted_codex(
            [message("one"), function_call("nothing_here"), message("two")],
            telemetry=recorder.telemetry,
        ) as s:
            thread = await s.codex.thread_start()
            await thread.run("first")
            await recorder.turns_ended.wait(1)
            await thread.run("second")  # two model calls: an unknown tool, then the answer
            await recorder.turns_ended.wait(2)

    first, second = sorted(recorder.finished("codex.turn"), key=lambda span: span.start_time or 0)
    assert first.attributes is not None
    assert second.attributes is not None
    assert first.attributes["gen_ai.usage.input_tokens"] == 10
    assert second.attributes["gen_ai.usage.input_tokens"] == 20
    assert second.attributes["gen_ai.usage.output_tokens"] == 10


async def test_an_interrupted_turns_span_says_it_was_interrupted(scripted_codex: Any) -> None:
    recorder = Recorder()
    with anyio.fail_after(60):
        async with scripted_codex([stall()], telemetry=recorder.telemetry) as s:
            thread = await s.codex.thread_start()
            async with thread.turn("wait forever") as handle:
                async for event in handle.stream():
                    if event.method == "turn/started":
                        break  # leaving the block early interrupts the turn
            await recorder.turns_ended.wait()

    turn = recorder.one("codex.turn")
    assert turn.attributes is not None
    assert turn.attributes["codex.turn.status"] == "interrupted"
    assert turn.attributes["codex.turn.id"] == handle.id
    assert turn.status.status_code is StatusCode.UNSET
    interrupt = recorder.one("turn/interrupt")
    assert interrupt.attributes == {"rpc.system": "jsonrpc", "rpc.method": "turn/interrupt"}


async def test_a_failed_turns_span_has_error_status_and_the_turns_error(
    scripted_codex: Any,
) -> None:
    recorder = Recorder()
    with anyio.fail_after(60):
        async with scripted_codex([failed("the model broke")], telemetry=recorder.telemetry) as s:
            thread = await s.codex.thread_start()
            with pytest.raises(TurnFailedError):
                await thread.run("hello")
            await recorder.turns_ended.wait()

    turn = recorder.one("codex.turn")
    assert turn.attributes is not None
    assert turn.attributes["codex.turn.status"] == "failed"
    assert turn.attributes["error.type"] == "turn_failed"
    assert turn.status.status_code is StatusCode.ERROR
    assert "the model broke" in str(turn.status.description)
    assert recorder.points("codex.turns.active")[0][1] == 0


async def test_a_failed_request_span_carries_the_json_rpc_error_code(scripted_codex: Any) -> None:
    recorder = Recorder()
    with anyio.fail_after(60):
        async with scripted_codex([], telemetry=recorder.telemetry) as s:
            with pytest.raises(InvalidRequestError):
                await s.codex.client.request("no/such/method", {})

    span = recorder.one("no/such/method")
    assert span.attributes is not None
    assert span.attributes["rpc.jsonrpc.error_code"] == -32600
    assert span.status.status_code is StatusCode.ERROR


async def test_without_a_provider_there_is_no_telemetry_and_no_turn_observer(
    scripted_codex: Any,
) -> None:
    # No global provider is ever set in this process, and this one is not passed.
    recorder = Recorder()
    assert resolve(None) is None
    with anyio.fail_after(60):
        async with scripted_codex([message("hi")]) as s:
            thread = await s.codex.thread_start()
            async with thread.turn("hello") as handle:
                async for event in handle.stream():
                    if event.method == "turn/started":
                        observers = s.codex.client.statistics().router.turn_observers
                assert (await handle.run()).final_response == "hi"
    assert observers == 0
    assert recorder.spans.get_finished_spans() == ()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_sync_client_nests_the_turn_span_under_the_callers_span(backend: str) -> None:
    recorder = Recorder()
    with scripted_runtime([message("hi")], backend=backend) as runtime:
        with Codex(runtime.config, backend=backend, telemetry=recorder.telemetry) as codex:
            thread = codex.thread_start()
            with recorder.tracer_provider.get_tracer("the-app").start_as_current_span("app"):
                assert thread.run("hi").final_response == "hi"
    # Closing the client ended its tasks, the turn's watcher among them.
    turn = recorder.one("codex.turn")
    assert parent_of(turn) == span_id(recorder.one("app"))
    assert turn.attributes is not None
    assert turn.attributes["codex.turn.status"] == "completed"


class RaisingProcessor(SpanProcessor):
    """A span processor with a broken exporter behind it."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        raise RuntimeError("the exporter is down (on_start)")

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("the exporter is down (on_end)")


class RaisingInstrument:
    def add(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the metrics backend is down")

    record = add


class RaisingMeter(NoOpMeter):
    def create_counter(self, *args: Any, **kwargs: Any) -> Any:
        return RaisingInstrument()

    create_histogram = create_up_down_counter = create_counter


class RaisingMeterProvider(NoOpMeterProvider):
    def get_meter(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return RaisingMeter(name)


async def test_span_processors_and_instruments_that_raise_never_fail_a_turn(
    scripted_codex: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def lookup_order(order_id: str) -> str:
        """Look up an order's status."""
        return f"order {order_id} has shipped"

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(RaisingProcessor())
    telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=RaisingMeterProvider())
    script = [
        function_call("lookup_order", {"order_id": "42"}),
        exec_command(TOUCH, escalate=True),
        message("Done."),
        message("Again."),
    ]
    handlers = Handlers(approvals=ApprovalPolicy.accept_all())
    caplog.set_level(logging.DEBUG, logger="codex_anyio.telemetry")
    with anyio.fail_after(60):
        async with scripted_codex(
            script, approval_policy="on-request", handlers=handlers, telemetry=telemetry
        ) as s:
            thread = await s.codex.thread_start(dynamic_tools=[lookup_order])
            assert (await thread.run("ship it")).final_response == "Done."
            with pytest.raises(InvalidRequestError):
                await s.codex.client.request("no/such/method", {})
            assert (await thread.run("again")).final_response == "Again."
            assert s.model.function_call_outputs()[0]["output"] == "order 42 has shipped"
            assert s.codex.client._telemetry.failures > 0
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert "the client carries on" in warned[0].getMessage()
    assert warned[0].exc_info is not None


async def test_a_span_processor_that_blocks_the_loop_is_warned_about_once(
    scripted_codex: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every call counts as slow: the warning's logic, without a timed test.
    monkeypatch.setattr("codex_anyio.telemetry._telemetry.SLOW_TELEMETRY_CALL", 0.0)
    recorder = Recorder()
    caplog.set_level(logging.WARNING, logger="codex_anyio.telemetry")
    with anyio.fail_after(60):
        async with scripted_codex(
            [message("one"), message("two")], telemetry=recorder.telemetry
        ) as s:
            thread = await s.codex.thread_start()
            assert (await thread.run("1")).final_response == "one"
            assert (await thread.run("2")).final_response == "two"
    [warning] = [r.getMessage() for r in caplog.records]
    assert "blocked the event loop" in warning
    assert "BatchSpanProcessor" in warning


def test_the_readme_says_telemetry_never_fails_a_turn_and_a_blocking_exporter_needs_batching() -> (
    None
):
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "Telemetry never fails a turn" in readme
    assert "BatchSpanProcessor" in readme
    assert "SimpleSpanProcessor" in readme
    assert "`codex_anyio.telemetry`" in readme


def test_telemetry_is_public_and_off_by_default() -> None:
    import codex_anyio

    assert "Telemetry" in codex_anyio.__all__
    assert codex_anyio.Telemetry.__module__ == "codex_anyio"
    assert codex_anyio.CodexConfig().wire_log is False
    assert resolve(False) is None


def test_token_counts_are_the_turns_share_of_the_threads_usage() -> None:
    def usage(total: Sequence[int], last: Sequence[int]) -> dict[str, Any]:
        names = ("inputTokens", "cachedInputTokens", "outputTokens", "reasoningOutputTokens")
        return {
            "total": {**dict(zip(names, total, strict=True)), "totalTokens": total[0] + total[2]},
            "last": {**dict(zip(names, last, strict=True)), "totalTokens": last[0] + last[2]},
        }

    # The thread had used 100/40/20/5 before the turn; the turn made two model calls, then
    # the runtime repeated its first report (as it does on an interrupt): counted once.
    first = usage((130, 50, 30, 7), (30, 10, 10, 2))
    last = usage((170, 60, 45, 9), (40, 10, 15, 2))
    tally = TurnTally(None, "thread", "turn")
    tally.update(first)
    assert token_counts(tally.usage) == {
        "input": 30,
        "cached_input": 10,
        "output": 10,
        "reasoning": 2,
    }
    tally.update(last)
    tally.update(first)
    assert token_counts(tally.usage) == {
        "input": 70,
        "cached_input": 20,
        "output": 25,
        "reasoning": 4,
    }


def run_python(code: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_codex_anyio_imports_and_runs_a_turn_without_opentelemetry() -> None:
    out = run_python(
        """
        import importlib.abc, sys

        class NoOpenTelemetry(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, NoOpenTelemetry())
        import anyio
        import codex_anyio
        from codex_anyio.testing import message, open_scripted_codex

        async def main():
            async with open_scripted_codex([message("fine")]) as s:
                thread = await s.codex.thread_start()
                print((await thread.run("hi")).final_response)
            try:
                codex_anyio.telemetry._telemetry.resolve(True)
            except RuntimeError as exc:
                print("explicit:", exc)

        anyio.run(main)
        print("opentelemetry" in sys.modules)
        """
    )
    assert out.splitlines() == [
        "fine",
        "explicit: telemetry needs the opentelemetry-api package: pip install 'codex-anyio[otel]'",
        "False",
    ]


def test_a_global_sdk_provider_turns_telemetry_on_and_false_turns_it_off() -> None:
    out = run_python(
        """
        import anyio
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from codex_anyio.testing import message, open_scripted_codex

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

        async def main():
            for setting in (None, False):
                async with open_scripted_codex([message("hi")], telemetry=setting) as s:
                    thread = await s.codex.thread_start()
                    await thread.run("hi")
                names = {span.name for span in exporter.get_finished_spans()}
                print(setting, "thread/start" in names)
                exporter.clear()

        anyio.run(main)
        """
    )
    assert out.splitlines() == ["None True", "False False"]


# -- the wire log -------------------------------------------------------------------------------


def test_the_wire_log_redacts_credentials_and_keeps_token_counts() -> None:
    message_with_secrets = {
        "method": "account/login/start",
        "params": {
            "type": "apiKey",
            "apiKey": "sk-live-0123456789abcdef",
            "accessToken": "eyJ.secret.jwt",
            "nested": [{"password": "hunter2", "client_secret": "s3"}],
            "httpHeaders": {"X-Custom": "anything", "Authorization": "Bearer abcdefghijkl"},
            "env": {"OPENAI_API_KEY": "k", "GITHUB_TOKEN": "t", "PATH": "/usr/bin"},
            "note": "run with Authorization: Bearer abcdefghijklmnop please",
            "tokenUsage": {"total": {"inputTokens": 10, "outputTokens": 5}},
        },
    }
    cleaned = redact(message_with_secrets)
    params = cleaned["params"]
    assert params["type"] == "apiKey"
    assert params["apiKey"] == params["accessToken"] == REDACTED
    assert params["nested"] == [{"password": REDACTED, "client_secret": REDACTED}]
    assert params["httpHeaders"] == {"X-Custom": REDACTED, "Authorization": REDACTED}
    assert params["env"] == {
        "OPENAI_API_KEY": REDACTED,
        "GITHUB_TOKEN": REDACTED,
        "PATH": "/usr/bin",
    }
    assert "abcdefghijklmnop" not in params["note"]
    assert params["tokenUsage"] == {"total": {"inputTokens": 10, "outputTokens": 5}}
    assert "sk-live" not in redact_line(b"not json: key sk-live-0123456789abcdef\n")


def test_redaction_matches_key_names_in_plural_camel_and_snake_case() -> None:
    cleaned = redact(
        {
            "tokens": ["t1", "t2"],
            "apiKeys": {"openai": "k1"},
            "secrets": "s",
            "passwords": ["p"],
            "privateKey": "-----BEGIN...",
            "client_key": "ck",
            "Client-Secret": "cs",
            "secretAccessKey": "aws",
            "AUTH_TOKEN": "at",
            "identityKey": "kept",
            "sortKey": "kept",
            "tokenUsage": {"inputTokens": 10, "cachedInputTokens": 0},
            "maxOutputTokens": 100,
        }
    )
    for key in ("secrets", "privateKey", "client_key", "Client-Secret", "secretAccessKey"):
        assert cleaned[key] == REDACTED, key
    assert cleaned["tokens"] == [REDACTED, REDACTED]
    assert cleaned["apiKeys"] == {"openai": REDACTED}
    assert cleaned["passwords"] == [REDACTED]
    assert cleaned["AUTH_TOKEN"] == REDACTED
    assert cleaned["identityKey"] == cleaned["sortKey"] == "kept"
    assert cleaned["tokenUsage"] == {"inputTokens": 10, "cachedInputTokens": 0}
    assert cleaned["maxOutputTokens"] == 100


def test_redaction_hides_secrets_inside_a_models_command() -> None:
    secrets = {
        "GITHUB_TOKEN=ghp_0123456789abcdefghijABCDEFGHIJ012345 gh pr create": "ghp_0123",
        "DB_PASSWORD='correct horse' ./migrate": "correct horse",
        "export OPENAI_API_KEY=live-key-0123; python run.py": "live-key-0123",
        "git clone https://alice:s3cr3t@git.example.test/repo.git": "s3cr3t",
        "mysql -u root --password hunter2 app": "hunter2",
        "aws s3 ls --profile x # key AKIAIOSFODNN7EXAMPLE": "AKIAIOSFODNN7EXAMPLE",
        "curl -H 'Authorization: Bearer abcdefghijklmnop' api": "abcdefghijklmnop",
        'echo {"password": "pw-in-json"}': "pw-in-json",
        "psql postgres://app:pg-pass@db/app --token-file /run/t": "pg-pass",
    }
    for command, secret in secrets.items():
        note = {
            "method": "item/started",
            "params": {"item": {"type": "commandExecution", "command": command}},
        }
        logged = redact_line(json.dumps(note).encode())
        assert secret not in logged, logged
        assert REDACTED in logged
    kept = "pytest -q --max-tokens 100 --token-file /run/t max_tokens=5"
    assert redact(kept) == kept


def test_redaction_of_a_message_nested_1000_deep_is_bounded() -> None:
    # 1,000 levels (500 of them objects): orjson decodes it, a recursive walk would not.
    text = redact_line(b'{"x": [' * 500 + b'"password=hunter2"' + b"]}" * 500)
    assert TOO_DEEP in text
    assert "hunter2" not in text
    assert len(text) < 2000


async def test_the_wire_log_survives_a_message_nested_1000_deep(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # orjson decodes up to 1,024 levels, so the reader takes this line; the log must too.
    script = """
    handshake()
    r = expect("test/deep")
    raw(b'{"id": ' + str(r["id"]).encode() + b', "result": ' + b'{"a": ' * 1000 + b'1'
        + b'}' * 1000 + b'}\\n')
    reply(expect("test/echo"), {"alive": True})
    hold()
    """
    caplog.set_level(logging.DEBUG, logger="codex_anyio.wire")
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script, wire_log=True)) as codex:
            result = await codex.client.request("test/deep")
            for _ in range(1000):
                result = result["a"]
            assert result == 1
            assert await codex.client.request("test/echo") == {"alive": True}
    received = [r.getMessage() for r in caplog.records if r.getMessage().startswith("<- ")]
    assert any(TOO_DEEP in line for line in received)


async def test_the_wire_log_shows_both_directions_without_secrets(
    scripted_codex: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEX_ANYIO_WIRE_LOG", "1")
    caplog.set_level(logging.DEBUG, logger="codex_anyio.wire")
    with anyio.fail_after(60):
        async with scripted_codex([]) as s:
            with pytest.raises(InvalidRequestError):
                await s.codex.client.request("no/such/method", {"apiKey": "sk-do-not-log-me-123"})
    lines = [r.getMessage() for r in caplog.records if r.name == "codex_anyio.wire"]
    sent = [line for line in lines if line.startswith("-> ")]
    received = [line for line in lines if line.startswith("<- ")]
    assert any('"method":"initialize"' in line for line in sent)
    assert any('"userAgent"' in line for line in received)
    assert any('"no/such/method"' in line and REDACTED in line for line in sent)
    assert not any("sk-do-not-log-me" in line for line in lines)


async def test_the_wire_log_is_off_by_default(
    scripted_codex: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CODEX_ANYIO_WIRE_LOG", raising=False)
    caplog.set_level(logging.DEBUG, logger="codex_anyio.wire")
    with anyio.fail_after(60):
        async with scripted_codex([]) as s:
            await s.codex.client.request("thread/list", {})
    assert not [r for r in caplog.records if r.name == "codex_anyio.wire"]


async def test_with_telemetry_on_the_watchers_notifications_are_never_opted_out(
    scripted_codex: Any,
) -> None:
    """A client opting out of everything a result does not need still traces its items: the
    command's span starts at its ``item/started``, which is kept while telemetry is on."""
    recorder = Recorder()
    with anyio.fail_after(60):
        async with scripted_codex(
            [exec_command("echo hi"), message("ok")],
            telemetry=recorder.telemetry,
            opt_out_notification_methods=result_only_opt_outs(),
        ) as s:
            thread = await s.codex.thread_start()
            await thread.run("say hi")
            await recorder.turns_ended.wait()
    shell = recorder.one("execute_tool shell")
    assert shell.attributes is not None
    assert shell.attributes["codex.command.exit_code"] == 0


async def test_a_goal_gets_one_span_whose_children_are_the_spans_of_its_turns(
    scripted_codex: Any,
) -> None:
    from .test_goals import met_on_turn

    recorder = Recorder()
    with anyio.fail_after(60):
        async with scripted_codex(met_on_turn(3), telemetry=recorder.telemetry) as s:
            thread = await s.codex.thread_start()
            tracer = recorder.tracer_provider.get_tracer("the-app")
            with tracer.start_as_current_span("the app's request"):
                result = await thread.run_goal("a secret objective", token_budget=10_000)

    app, goal = recorder.one("the app's request"), recorder.one("codex.goal")
    assert parent_of(goal) == span_id(app)
    assert goal.attributes is not None
    assert dict(goal.attributes) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.request.model": "mock-model",
        "gen_ai.provider.name": "mock",
        "gen_ai.conversation.id": thread.id,
        "codex.goal.token_budget": 10_000,
        "codex.goal.status": "complete",
        "codex.goal.turns": 3,
        # The sum of the turns' (10+1, 20+2, then 20+4 and 7+3), as the result says.
        "gen_ai.usage.input_tokens": 57,
        "gen_ai.usage.output_tokens": 10,
        "codex.usage.cached_input_tokens": 0,
        "codex.usage.reasoning_output_tokens": 0,
    }
    assert goal.status.status_code is StatusCode.UNSET
    turns = sorted(recorder.finished("codex.turn"), key=lambda span: span.start_time or 0)
    assert [t.attributes["codex.turn.id"] for t in turns if t.attributes] == [
        t.id for t in result.turns
    ]
    for span, turn in zip(turns, result.turns, strict=True):
        assert parent_of(span) == span_id(goal)
        assert span.attributes is not None
        assert span.attributes["codex.turn.status"] == "completed"
        assert span.attributes["gen_ai.usage.input_tokens"] == turn.usage.input_tokens
    assert parent_of(recorder.one("thread/goal/set")) == span_id(goal)
    # Each turn's tokens are counted once, by its turn: the goal adds none of its own.
    tokens = {
        labels["gen_ai.token.type"]: value for labels, value in recorder.points("codex.token.usage")
    }
    assert (tokens["input"], tokens["output"]) == (57, 10)
    assert not any(
        "secret" in str(value)
        for span in (goal, *turns)
        for value in (span.attributes or {}).values()
    )


async def test_a_goal_left_by_a_deadline_ends_its_span_paused_with_the_live_turn_interrupted(
    scripted_codex: Any,
) -> None:
    from .test_goals import met_on_turn, run_goal_until_its_second_request

    recorder = Recorder()
    with anyio.fail_after(60):
        async with scripted_codex(met_on_turn(3, stall_turn=2), telemetry=recorder.telemetry) as s:
            thread = await s.codex.thread_start()
            await run_goal_until_its_second_request(s, thread)

    goal = recorder.one("codex.goal")
    assert goal.attributes is not None
    assert goal.attributes["codex.goal.status"] == "paused"
    assert goal.attributes["codex.goal.turns"] == 2
    assert goal.attributes["codex.cancelled"] is True
    turns = sorted(recorder.finished("codex.turn"), key=lambda span: span.start_time or 0)
    assert [t.attributes["codex.turn.status"] for t in turns if t.attributes] == [
        "completed",
        "interrupted",
    ]
    assert all(parent_of(span) == span_id(goal) for span in turns)
    # The set and the pause are the goal's requests.
    assert [parent_of(span) for span in recorder.finished("thread/goal/set")] == [span_id(goal)] * 2
