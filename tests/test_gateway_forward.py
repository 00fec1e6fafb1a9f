"""Forwarding through the gateway to an upstream Responses endpoint on loopback.

The upstream is a second gateway with a policy (or the scripted model): every fault an
upstream can have reaches the runtime as the service would show it, is recorded, and nothing
hangs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_anyio import ModelGateway, TurnFailedError, UsageLimitError
from codex_anyio.gateway import (
    ModelRequest,
    ResponseEvent,
    SseEvent,
    completed_event,
    created_event,
    message_events,
    read_cassette,
    response,
)
from codex_anyio.testing import (
    ScriptedModel,
    http_error,
    message,
    open_gateway_codex,
    usage_limit_reached,
)

pytestmark = pytest.mark.anyio


def forwarder(upstream: str, **options: Any) -> ModelGateway:
    return ModelGateway(upstream=upstream, request_max_retries=0, stream_max_retries=0, **options)


def policy_gateway(policy: Any) -> ModelGateway:
    return ModelGateway(policy)


async def test_a_forwarded_turn_reaches_the_upstream_and_both_gateways_join_the_call(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(60):
        async with ScriptedModel([message("from upstream")]) as upstream:
            async with open_gateway_codex(forwarder(upstream.base_url), directory=tmp_path) as g:
                thread = await g.codex.thread_start()
                result = await thread.run("hi")
            (seen,) = upstream.requests
    assert result.final_response == "from upstream"
    (call,) = result.model_calls
    assert (
        (seen.thread_id, seen.turn_id) == (call.thread_id, call.turn_id) == (thread.id, result.id)
    )
    assert [e["type"] for e in call.events][-1] == "response.completed"
    assert call.usage is not None
    assert call.usage["total_tokens"] == 15


async def test_logprobs_are_asked_for_and_kept_when_the_upstream_returns_them(
    tmp_path: Path,
) -> None:
    asked: list[list[str]] = []

    async def with_logprobs(request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        include = list(request.body.get("include") or [])
        asked.append(include)
        for event in response(message_events("a b", deltas=["a ", "b"])):
            if event["type"] == "response.output_text.delta" and (
                "message.output_text.logprobs" in include
            ):
                event = {**event, "logprobs": [{"token": event["delta"], "logprob": -0.5}]}
            yield event

    with anyio.fail_after(60):
        async with policy_gateway(with_logprobs) as upstream:
            for logprobs in (True, False):
                gateway = forwarder(upstream.base_url, logprobs=logprobs)
                async with open_gateway_codex(gateway, directory=tmp_path / str(logprobs)) as g:
                    result = await (await g.codex.thread_start()).run("hi")
                    assert result.final_response == "a b"
                (call,) = result.model_calls
                if logprobs:
                    assert call.logprobs == [
                        {"token": "a ", "logprob": -0.5},
                        {"token": "b", "logprob": -0.5},
                    ]
                else:
                    assert call.logprobs == []
    assert "message.output_text.logprobs" in asked[0]
    assert "reasoning.encrypted_content" in asked[0]  # the runtime's own include is kept
    assert "message.output_text.logprobs" not in asked[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_upstream_fails_the_turn_with_a_502_naming_it_and_is_recorded(
    tmp_path: Path,
) -> None:
    upstream = f"http://127.0.0.1:{closed_port()}/v1"
    cassette = tmp_path / "c.jsonl"
    with anyio.fail_after(60):
        gateway = forwarder(upstream, record=cassette)
        async with open_gateway_codex(gateway, directory=tmp_path) as g:
            thread = await g.codex.thread_start()
            with pytest.raises(
                TurnFailedError,
                match=r"the upstream \S+ failed: cannot connect \(.*Connection refused",
            ) as failure:
                await thread.run("hi")
            (call,) = g.gateway.exchanges(thread_id=thread.id)
    assert "502" in str(failure.value)
    assert call.status == 502
    assert call.error is not None
    assert upstream in call.error
    (recorded,) = read_cassette(cassette)
    assert (recorded.status, recorded.error) == (502, call.error)


async def test_an_upstream_that_never_answers_times_out_as_a_504(tmp_path: Path) -> None:
    async def silent(request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        await anyio.sleep_forever()
        yield created_event("never")  # pragma: no cover

    with anyio.fail_after(60):
        async with policy_gateway(silent) as upstream:
            gateway = forwarder(upstream.base_url, upstream_timeout=0.5)
            async with open_gateway_codex(gateway, directory=tmp_path) as g:
                thread = await g.codex.thread_start()
                with pytest.raises(TurnFailedError, match="did not answer in time"):
                    await thread.run("hi")
                (call,) = g.gateway.exchanges(thread_id=thread.id)
            (upstream_call,) = upstream.exchanges()
            assert await upstream_call.wait_finished(10)
    assert call.status == 504
    assert upstream_call.abandoned  # the gateway hung up on it


async def test_an_upstream_that_stalls_mid_stream_breaks_the_runtimes_stream_off(
    tmp_path: Path,
) -> None:
    async def stalls(request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        yield created_event("resp_1")
        await anyio.sleep_forever()

    with anyio.fail_after(60):
        async with policy_gateway(stalls) as upstream:
            gateway = forwarder(upstream.base_url, upstream_timeout=0.5)
            async with open_gateway_codex(gateway, directory=tmp_path) as g:
                thread = await g.codex.thread_start()
                with pytest.raises(TurnFailedError):
                    await thread.run("hi")
                (call,) = g.gateway.exchanges(thread_id=thread.id)
    assert call.status == 200
    assert call.dropped
    assert call.error is not None
    assert "did not answer in time" in call.error


async def test_upstream_5xx_and_usage_limit_answers_reach_the_runtime_as_they_were(
    tmp_path: Path,
) -> None:
    script = [
        http_error(503),
        usage_limit_reached(1_900_000_000),
    ]
    with anyio.fail_after(60):
        async with ScriptedModel(script) as upstream:
            async with open_gateway_codex(forwarder(upstream.base_url), directory=tmp_path) as g:
                thread = await g.codex.thread_start()
                with pytest.raises(TurnFailedError) as unavailable:
                    await thread.run("first")
                assert not isinstance(unavailable.value, UsageLimitError)
                with pytest.raises(UsageLimitError) as limited:
                    await thread.run("second")
                calls = g.gateway.exchanges(thread_id=thread.id)
    assert limited.value.resets_at is not None
    assert int(limited.value.resets_at.timestamp()) == 1_900_000_000
    assert [c.status for c in calls] == [503, 429]
    assert calls[1].response_headers["x-codex-primary-reset-at"] == "1900000000"
    assert all(c.error is None for c in calls)  # the service's own answers, not faults


async def test_a_malformed_upstream_stream_is_passed_on_as_it_was_and_recorded(
    tmp_path: Path,
) -> None:
    async def garbled(request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        yield created_event("resp_1")
        yield SseEvent("event: response.output_text.delta\ndata: {not json")
        yield completed_event("resp_1")

    with anyio.fail_after(60):
        async with policy_gateway(garbled) as upstream:
            async with open_gateway_codex(forwarder(upstream.base_url), directory=tmp_path) as g:
                thread = await g.codex.thread_start()
                result = await thread.run("hi")  # the runtime skips the event it cannot read
    (call,) = result.model_calls
    assert call.events[1] == "event: response.output_text.delta\ndata: {not json"
    assert call.events[2]["type"] == "response.completed"


async def test_an_interrupted_turn_closes_the_upstream_stream(tmp_path: Path) -> None:
    started = anyio.Event()

    async def slow(request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        yield created_event("resp_1")
        started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(60):
        async with policy_gateway(slow) as upstream:
            async with open_gateway_codex(forwarder(upstream.base_url), directory=tmp_path) as g:
                thread = await g.codex.thread_start()
                async with thread.turn("wait") as turn:
                    await started.wait()
                    result = await turn.cancel()
            (upstream_call,) = upstream.exchanges()
            await upstream_call.wait_finished(10)
    assert result.status == "interrupted"
    (call,) = result.model_calls
    assert call.abandoned
    assert upstream_call.abandoned


def test_an_upstream_must_be_an_http_url() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        ModelGateway(upstream="ftp://127.0.0.1/v1")
    with pytest.raises(ValueError, match=r"\[REDACTED\]@"):
        ModelGateway(upstream="ws://user:hunter2@127.0.0.1/v1")


def test_the_gateway_benchmark_runs_every_way_and_reports_what_the_gateway_adds(
    tmp_path: Path,
) -> None:
    out = tmp_path / "gateway.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gateway",
            "--turns",
            "2",
            "--repeats",
            "1",
            "--record",
            "--json",
            str(out),
        ],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["turns_each_way"] == 2
    ways = ("direct", "gateway", "h11-proxy", "raw-proxy")
    assert set(report["p50_ms"]) == set(ways)
    by_process = report["cpu_ms_per_turn_by_process"]
    assert set(by_process["gateway"]) == {"runtime", "hop", "upstream"}
    assert by_process["direct"]["hop"] == 0.0  # no hop process is watched on the direct way
    assert all(by_process[way]["runtime"] > 0 for way in ways)
    assert set(report["cpu_ms_added_outside_the_runtime"]) == set(ways[1:])


def _chunks(body: bytes) -> list[bytes]:
    """The data chunks of a chunked HTTP body, in order (the terminating one left out)."""
    found = []
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        found.append(body[:size])
        body = body[size + 2 :]
    return found


async def _raw_post(base_url: str) -> bytes:
    """One ``POST /v1/responses`` over a raw socket; the raw response body (still chunked)."""
    port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    data = b'{"model": "m", "input": []}'
    head = (
        "POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode()
    received = b""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(head + data)
        try:
            while True:
                received += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    return received.partition(b"\r\n\r\n")[2]


async def test_a_burst_of_events_goes_out_as_one_chunk_from_a_policy_and_through_a_forward() -> (
    None
):
    events = list(response(message_events("one two three four five")))

    async def burst(request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        for event in events:
            yield event  # all ready at once

    with anyio.fail_after(20):
        async with policy_gateway(burst) as upstream, forwarder(upstream.base_url) as forward:
            direct = await _raw_post(upstream.base_url)
            forwarded = await _raw_post(forward.base_url)
    for body in (direct, forwarded):
        (chunk,) = _chunks(body)  # one HTTP chunk, not one per event
        assert chunk.count(b"\n\n") == len(events) > 5
        assert body.endswith(b"0\r\n\r\n")
    assert _chunks(forwarded) == _chunks(direct)  # passed on byte for byte


async def test_an_answer_in_bursts_is_chunked_one_chunk_per_burst_through_a_forward() -> None:
    events = list(response(message_events("one two three four five")))
    second = anyio.Event()

    async def two_bursts(request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        for event in events[:3]:
            yield event
        await second.wait()  # the first burst goes out before the rest exists
        for event in events[3:]:
            yield event

    data = b'{"model": "m", "input": []}'
    request = (
        "POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data
    received = b""
    with anyio.fail_after(20):
        async with policy_gateway(two_bursts) as upstream, forwarder(upstream.base_url) as fwd:
            port = int(fwd.base_url.rsplit(":", 1)[1].split("/")[0])
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(request)
                while received.count(b"\n\n") < 3:  # the first burst arrived, alone
                    received += await stream.receive()
                second.set()
                try:
                    while True:
                        received += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
    head, _, body = received.lower().partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    chunks = _chunks(body)
    assert [chunk.count(b"\n\n") for chunk in chunks] == [3, len(events) - 3]
    assert body.endswith(b"0\r\n\r\n")
