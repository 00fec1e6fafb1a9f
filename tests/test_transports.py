"""Attaching to a running app-server over WebSocket (``ws://``, ``wss://``) and unix sockets:
the real runtime where it can (tokens, two clients, readiness), a scripted WebSocket server for
the faults it cannot produce on demand (close frames mid-turn, over-long messages, pings, a
peer that stops reading, TLS)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio.streams.text import TextReceiveStream

from codex_anyio import (
    AsyncCodex,
    AuthenticationError,
    CodexConfig,
    CodexPool,
    Limits,
    ProtocolError,
    StartupError,
    TransportClosedError,
    TurnIdleTimeoutError,
)
from codex_anyio._wire._address import Address, resolve_token
from codex_anyio.serve._server import serve_app_server
from codex_anyio.testing import message, stall

from .fake_ws_server import Peer, fake_ws_server

pytestmark = pytest.mark.anyio

TOKEN = "right-token"


def attach(url: str, **fields: Any) -> CodexConfig:
    fields.setdefault("token", TOKEN)
    return CodexConfig(connect=url, **fields)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A folder short enough for a unix socket path (pytest's tmp_path may not be)."""
    with tempfile.TemporaryDirectory(prefix="cxa-") as folder:
        yield Path(folder)


# -- the real runtime --------------------------------------------------------------------------


async def test_two_clients_attached_to_one_server_each_see_only_their_own_turns(
    scripted_codex: Any,
) -> None:
    script = [message("first client", deltas=3), message("second client", deltas=3)]
    with anyio.fail_after(60):
        async with scripted_codex(script, transport="ws") as s:
            other_config = s.server.client_config()
            async with AsyncCodex(other_config) as other:
                taps = [s.codex.client.subscribe(everything=True), other.client.subscribe()]
                mine = await s.codex.thread_start()
                theirs = await other.thread_start()
                results: dict[str, str | None] = {}

                async def run(thread: Any, prompt: str) -> None:
                    async with thread.turn(prompt) as turn:
                        pieces = [text async for text in turn.stream_text()]
                    results[thread.id] = "".join(pieces)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(run, mine, "one")
                    tg.start_soon(run, theirs, "two")
                assert sorted(results.values()) == ["first client", "second client"]
                async with taps[0], taps[1]:
                    seen = []
                    while True:
                        try:
                            seen.append(taps[0].receive_nowait())
                        except anyio.WouldBlock:
                            break
                assert seen, "the tap saw none of its own thread's events"
                # The runtime tells every connection about thread lifecycle (thread/started,
                # thread/status/changed), but a turn's events go only to the client running it.
                foreign = [n for n in seen if n.thread_id == theirs.id]
                assert all(n.method.startswith("thread/") for n in foreign), foreign
                assert not [n for n in seen if n.turn_id and n.thread_id != mine.id]
                assert any(n.turn_id and n.thread_id == mine.id for n in seen)
            # Closing the other client closed its connection, not the server.
            again = await s.codex.thread_start()
            assert again.id not in (mine.id, theirs.id)


async def test_a_wrong_token_is_an_authentication_error_that_never_shows_the_token(
    scripted_codex: Any,
) -> None:
    secret = "not-the-token-0123456789"
    with anyio.fail_after(60):
        async with scripted_codex([], transport="ws") as s:
            with pytest.raises(AuthenticationError, match="refused the token") as caught:
                async with AsyncCodex(CodexConfig(connect=s.server.url, token=secret)):
                    pytest.fail("attached with a wrong token")
            assert not isinstance(caught.value, ProtocolError)
            assert "401" in str(caught.value)
            assert secret not in str(caught.value)
            assert secret not in repr(CodexConfig(connect=s.server.url, token=secret))
            with pytest.raises(AuthenticationError, match="requires a token"):
                async with AsyncCodex(CodexConfig(connect=s.server.url)):
                    pytest.fail("attached without a token")


async def test_the_token_from_a_file_or_the_environment_is_in_no_log_line_or_repr(
    scripted_codex: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    with anyio.fail_after(60):
        async with scripted_codex([message("via file"), message("via env")], transport="ws") as s:
            token = s.server.token_file.read_text().strip()
            by_file = s.server.client_config()
            monkeypatch.setenv("CODEX_TEST_TOKEN", token)
            by_env = CodexConfig(connect=s.server.url, token_env="CODEX_TEST_TOKEN")
            for config, expected in ((by_file, "via file"), (by_env, "via env")):
                async with AsyncCodex(config) as codex:
                    thread = await codex.thread_start()
                    assert (await thread.run("hi")).final_response == expected
                    assert token not in repr(codex.client._transport)
            assert token not in caplog.text
            assert token not in repr(CodexConfig(connect=s.server.url, token=token))


async def test_waiting_for_readyz_then_attaching_to_a_running_server(scripted_codex: Any) -> None:
    with anyio.fail_after(60):
        async with scripted_codex([message("ready")], transport="ws") as s:
            config = s.server.client_config(ready_timeout=10)
            async with AsyncCodex(config) as codex:
                thread = await codex.thread_start()
                assert (await thread.run("hi")).final_response == "ready"


async def test_a_turn_running_when_the_client_leaves_is_interrupted_and_the_server_lives_on(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(60):
        async with scripted_codex([stall(), message("still here")], transport="unix") as s:
            async with AsyncCodex(s.server.client_config()) as other:
                thread = await other.thread_start()
                with anyio.move_on_after(30) as scope:
                    async with thread.turn("wait"):
                        await s.model.wait_for_requests(1)
                        scope.cancel()
            with anyio.fail_after(5):
                await s.model.exchanges[0].abandoned.wait()
            mine = await s.codex.thread_start()
            assert (await mine.run("still there?")).final_response == "still here"


async def test_a_pool_can_be_made_of_connections_to_one_running_server(
    scripted_codex: Any,
) -> None:
    script = [message(f"answer {i}") for i in range(4)]
    with anyio.fail_after(60):
        async with scripted_codex(script, transport="unix") as s:
            async with CodexPool(2, config=s.server.client_config()) as pool:
                answers: list[str | None] = []

                async def one(prompt: str) -> None:
                    answers.append((await pool.run(prompt)).final_response)

                async with anyio.create_task_group() as tg:
                    for i in range(4):
                        tg.start_soon(one, f"q{i}")
                assert sorted(answers) == [f"answer {i}" for i in range(4)]
                members = pool.statistics().members
                assert [m.pid for m in members] == [None, None]  # connections, not processes
                assert sum(m.threads_started for m in members) == 4


# -- silent peers: a hung or stopped runtime ends in bounded time -------------------------------


def _continue(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


async def test_a_server_stopped_mid_turn_fails_the_turn_once_a_ping_goes_unanswered(
    scripted_codex: Any,
) -> None:
    limits = Limits(ping_interval=0.2, ping_timeout=2, interrupt_timeout=1)
    with anyio.fail_after(60):
        async with scripted_codex([stall()], transport="ws", limits=limits) as s:
            thread = await s.codex.thread_start()
            pid = s.server.pid
            try:
                with pytest.raises(TransportClosedError, match=r"ping_timeout\): it is hung"):
                    async with thread.turn("wait") as turn:
                        await s.model.wait_for_requests(1)
                        os.kill(pid, signal.SIGSTOP)
                        await turn.run()
            finally:
                _continue(pid)


async def test_a_quiet_turn_on_a_live_server_is_kept_alive_by_its_pongs(
    scripted_codex: Any,
) -> None:
    limits = Limits(ping_interval=0.05, ping_timeout=10)
    with anyio.fail_after(60):
        async with scripted_codex(
            [message("slow and steady", deltas=3, delay=0.3)], transport="unix", limits=limits
        ) as s:
            thread = await s.codex.thread_start()
            assert (await thread.run("take your time")).final_response == "slow and steady"


async def test_a_stdio_runtime_stopped_mid_turn_ends_the_turn_with_its_idle_timeout(
    scripted_codex: Any,
) -> None:
    # No ping on a pipe: the bound a caller asks for is the turn's idle_timeout (the interrupt
    # that follows is bounded by interrupt_timeout).
    with anyio.fail_after(60):
        async with scripted_codex([stall()], limits=Limits(interrupt_timeout=0.5)) as s:
            thread = await s.codex.thread_start()
            pid = s.codex.client._transport.pid
            try:
                with pytest.raises(TurnIdleTimeoutError, match=r"sent no event for 0\.5 s"):
                    async with thread.turn("wait", idle_timeout=0.5) as turn:
                        await s.model.wait_for_requests(1)
                        os.kill(pid, signal.SIGSTOP)
                        await turn.run()
            finally:
                _continue(pid)


# -- start-up faults ---------------------------------------------------------------------------


async def _serve_handshake(peer: Peer) -> None:
    await peer.handshake()
    await peer.hold()


async def test_a_mounted_token_ending_in_a_newline_attaches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CODEX_TEST_TOKEN", TOKEN + "\n")
    with anyio.fail_after(10):
        async with fake_ws_server(_serve_handshake) as url:
            config = CodexConfig(connect=url, token_env="CODEX_TEST_TOKEN")
            async with AsyncCodex(config) as codex:
                assert codex.metadata.user_agent.startswith("fake_ws_server")


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("token", "right-\ntoken"),
        ("token", "right-\x00token"),
        ("token_env", "right-\ntoken"),  # an environment variable cannot hold a NUL
        ("token_file", "right-\ntoken"),
        ("token_file", "right-\x00token"),
    ],
)
async def test_a_token_with_a_control_character_is_a_value_error_naming_its_source_only(
    source: str, bad: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if source == "token_env":
        monkeypatch.setenv("CODEX_TEST_TOKEN", bad)
        given, named = "CODEX_TEST_TOKEN", "token in environment variable 'CODEX_TEST_TOKEN'"
    elif source == "token_file":
        given = str(tmp_path / "token")
        await anyio.Path(given).write_text(bad + "\n", encoding="utf-8")
        named = f"token file '{given}'"
    else:
        given, named = bad, "token"
    with anyio.fail_after(10):
        async with fake_ws_server(_serve_handshake) as url:
            with pytest.raises(ValueError, match=f"^the {re.escape(named)} contains a control"):
                async with AsyncCodex(CodexConfig(connect=url, **{source: given})):
                    pytest.fail("attached with a broken token")


async def test_a_password_in_the_url_is_in_no_error_log_line_or_repr(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    nowhere = f"ws://alice:hunter2@127.0.0.1:{port}"
    with anyio.fail_after(10):
        with pytest.raises(StartupError, match="nothing is listening") as caught:
            async with AsyncCodex(attach(nowhere)):
                pytest.fail("attached to nothing")
        assert f"ws://[REDACTED]@127.0.0.1:{port}" in str(caught.value)
        with pytest.raises(StartupError, match="not ready within") as caught:
            async with AsyncCodex(attach(nowhere, ready_timeout=0.1)):
                pytest.fail("attached to nothing")
        assert "hunter2" not in str(caught.value)
        async with fake_ws_server(_serve_handshake) as url:
            with_password = url.replace("ws://", "ws://alice:hunter2@")
            async with AsyncCodex(attach(with_password)) as codex:
                assert "hunter2" not in repr(codex.client._transport)
                assert "hunter2" not in repr(codex.config)
    assert "hunter2" not in caplog.text


async def test_a_server_that_never_answers_initialize_fails_start_up_naming_the_limit() -> None:
    async def mute(peer: Peer) -> None:
        await peer.expect("initialize")
        await peer.hold()

    with anyio.fail_after(10):
        async with fake_ws_server(mute) as url:
            limits = Limits(initialize_timeout=0.3)
            with pytest.raises(StartupError, match=r"did not answer initialize within 0.3 s"):
                async with AsyncCodex(attach(url), limits=limits):
                    pytest.fail("started without an initialize answer")


async def test_nothing_listening_on_a_port_fails_start_up_naming_the_address() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    url = f"ws://127.0.0.1:{port}"
    with anyio.fail_after(10), pytest.raises(StartupError, match="nothing is listening") as caught:
        async with AsyncCodex(attach(url)):
            pytest.fail("attached to nothing")
    assert url in str(caught.value)
    assert TOKEN not in str(caught.value)


async def test_nothing_listening_on_a_unix_path_fails_start_up_naming_the_path(
    short_tmp: Path,
) -> None:
    url = f"unix://{short_tmp}/none.sock"
    with anyio.fail_after(10), pytest.raises(StartupError, match="nothing is listening") as caught:
        async with AsyncCodex(CodexConfig(connect=url)):
            pytest.fail("attached to nothing")
    assert "none.sock" in str(caught.value)


async def test_the_readiness_wait_gives_up_after_its_bound(short_tmp: Path) -> None:
    url = f"unix://{short_tmp}/late.sock"
    with anyio.fail_after(10), pytest.raises(StartupError, match=r"not ready within 0.3 s"):
        async with AsyncCodex(CodexConfig(connect=url, ready_timeout=0.3)):
            pytest.fail("attached to nothing")


async def test_the_readiness_wait_attaches_once_a_late_server_is_up(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import codex_anyio._wire._ws as ws_module

    path = short_tmp / "late.sock"
    agents: list[str] = []
    found_nothing = anyio.Event()
    probe = ws_module._probe_ready

    async def counted_probe(*args: Any) -> str:
        try:
            return await probe(*args)
        except StartupError:
            found_nothing.set()
            raise

    # Waiting for "every task blocked" raced the client's 50 ms polls (the checker sleeps
    # 100 ms whenever a task is runnable, and could stay in phase with them for seconds).
    monkeypatch.setattr(ws_module, "_probe_ready", counted_probe)

    async def app(peer: Peer) -> None:
        await peer.handshake()
        await peer.hold()

    async def client() -> None:
        config = CodexConfig(connect=f"unix://{path}", ready_timeout=20)
        async with AsyncCodex(config) as codex:
            agents.append(codex.metadata.user_agent)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(client)
            await found_nothing.wait()  # the client probed, found nothing, and polls again
            assert not path.exists()
            async with fake_ws_server(app, token=None, unix_path=str(path)):
                while not agents:
                    await anyio.wait_all_tasks_blocked()
                    await anyio.lowlevel.checkpoint()
    assert agents[0].startswith("fake_ws_server")


async def test_a_tls_failure_names_the_tls_handshake(tls_files: tuple[Path, Path]) -> None:
    import ssl

    cert, key = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def app(peer: Peer) -> None:
        await peer.handshake()
        await peer.hold()

    with anyio.fail_after(10):
        async with fake_ws_server(app, ssl_context=server_context) as url:
            with pytest.raises(StartupError, match="TLS handshake") as caught:
                async with AsyncCodex(attach(url)):
                    pytest.fail("trusted a self-signed certificate")
            assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
            trusting = ssl.create_default_context(cafile=str(cert))
            async with AsyncCodex(attach(url, ssl_context=trusting)) as codex:
                assert codex.metadata.user_agent.startswith("fake_ws_server")


async def test_wss_to_a_server_that_does_not_speak_tls_names_the_tls_handshake() -> None:
    async def app(peer: Peer) -> None:
        await peer.handshake()

    with anyio.fail_after(10):
        async with fake_ws_server(app) as url:
            secure = url.replace("ws://", "wss://")
            with pytest.raises(StartupError, match=r"TLS handshake .* failed"):
                async with AsyncCodex(attach(secure)):
                    pytest.fail("attached over TLS to a plain server")
            with pytest.raises(StartupError, match=r"TLS handshake .* failed"):
                async with AsyncCodex(attach(secure, ready_timeout=5)):
                    pytest.fail("attached over TLS to a plain server")


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), for wss:// on loopback."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_a_server_that_hangs_up_during_the_upgrade_fails_start_up_naming_it() -> None:
    async def hang_up(stream: anyio.abc.SocketStream) -> None:
        await stream.aclose()

    with anyio.fail_after(10):
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, hang_up)
            with pytest.raises(StartupError, match="closed the connection during the WebSocket"):
                async with AsyncCodex(attach(f"ws://127.0.0.1:{port}")):
                    pytest.fail("attached to a server that hung up")
            tg.cancel_scope.cancel()


async def test_a_server_that_accepts_but_never_answers_the_upgrade_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import codex_anyio._wire._ws as ws

    monkeypatch.setattr(ws, "HANDSHAKE_TIMEOUT", 0.3)

    async def silent(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    with anyio.fail_after(10):
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, silent)
            with pytest.raises(StartupError, match=r"handshake .* took longer than 0.3 s"):
                async with AsyncCodex(attach(f"ws://127.0.0.1:{port}")):
                    pytest.fail("attached to a silent server")
            tg.cancel_scope.cancel()


# -- faults on a running connection ------------------------------------------------------------


async def test_a_close_frame_mid_turn_fails_every_waiter_with_its_code_and_reason() -> None:
    async def app(peer: Peer) -> None:
        await peer.handshake()
        request = await peer.expect("turn/start")
        turn = {"id": "t1", "items": [], "status": "inProgress", "error": None}
        await peer.reply(request, {"turn": turn})
        await peer.send(
            {
                "method": "item/agentMessage/delta",
                "params": {"threadId": "th1", "turnId": "t1", "itemId": "m", "delta": "Hel"},
            }
        )
        await peer.expect("test/never-answered")
        await peer.close(1011, "runtime restarting")
        await peer.hold()

    with anyio.fail_after(10):
        async with fake_ws_server(app) as url, AsyncCodex(attach(url)) as codex:
            client = codex.client
            tap = client.subscribe(everything=True)
            _, turn_stream = await client.start_turn("th1", {"threadId": "th1", "input": []})
            async with tap, turn_stream:
                assert (await turn_stream.receive()).params.delta == "Hel"
                pattern = r"closed the WebSocket \(code 1011: runtime restarting\)"
                with pytest.raises(TransportClosedError, match=pattern) as caught:
                    await client.request("test/never-answered")
                assert caught.value.returncode is None
                assert caught.value.stderr_tail == ""
                with pytest.raises(TransportClosedError, match=pattern):
                    await turn_stream.receive()
                assert (await tap.receive()).method == "item/agentMessage/delta"
                with pytest.raises(TransportClosedError, match=pattern):
                    await tap.receive()
                with pytest.raises(TransportClosedError, match=pattern):
                    await client.request("test/after-the-end")


async def test_closing_the_client_sends_a_normal_close_frame() -> None:
    peers: list[Peer] = []

    async def app(peer: Peer) -> None:
        peers.append(peer)
        await peer.handshake()
        await peer.hold()

    with anyio.fail_after(10):
        async with fake_ws_server(app) as url:
            async with AsyncCodex(attach(url)):
                pass
            while peers[0].close_code is None:
                await anyio.wait_all_tasks_blocked()
                await anyio.lowlevel.checkpoint()
            assert peers[0].close_code == 1000


async def test_a_connection_lost_without_a_close_frame_says_so() -> None:
    async def app(peer: Peer) -> None:
        await peer.handshake()
        await peer.expect("test/never-answered")
        await peer.stream.aclose()

    with anyio.fail_after(10):
        async with fake_ws_server(app) as url, AsyncCodex(attach(url)) as codex:
            with pytest.raises(TransportClosedError, match="without a WebSocket close frame"):
                await codex.client.request("test/never-answered")


async def test_a_message_longer_than_the_line_limit_is_a_protocol_error() -> None:
    async def app(peer: Peer) -> None:
        await peer.handshake()
        request = await peer.expect("test/big")
        await peer.reply(request, {"blob": "x" * (2 * 1024 * 1024)})
        await peer.hold()

    limits = Limits(max_line_bytes=1024 * 1024)
    with anyio.fail_after(10):
        async with fake_ws_server(app) as url, AsyncCodex(attach(url), limits=limits) as codex:
            with pytest.raises(TransportClosedError, match="protocol error") as caught:
                await codex.client.request("test/big")
            cause = caught.value.__cause__
            assert isinstance(cause, ProtocolError)
            assert "longer than 1048576 bytes (Limits.max_line_bytes)" in str(cause)


async def test_a_frame_announcing_more_than_the_line_limit_is_refused_before_its_payload() -> None:
    async def boaster(peer: Peer) -> None:
        await peer.handshake()
        await peer.expect("test/big")
        # A text frame whose header claims 2^63 - 1 bytes, then a few of them, then nothing.
        await peer.stream.send(b"\x81\x7f" + struct.pack("!Q", 2**63 - 1) + b'{"id": 2')
        await peer.hold()

    with anyio.fail_after(10):
        async with fake_ws_server(boaster) as url, AsyncCodex(attach(url)) as codex:
            with pytest.raises(TransportClosedError, match="protocol error") as caught:
                await codex.client.request("test/big")
            assert "(Limits.max_line_bytes)" in str(caught.value.__cause__)


async def test_a_pretty_printed_message_in_one_frame_is_one_message() -> None:
    async def app(peer: Peer) -> None:
        await peer.handshake()
        request = await peer.expect("test/echo")
        reply = {"id": request["id"], "result": {"text": "two\nlines", "ok": True}}
        await peer.send_text(json.dumps(reply, indent=2))
        await peer.hold()

    with anyio.fail_after(10):
        async with fake_ws_server(app) as url, AsyncCodex(attach(url), strict=True) as codex:
            assert await codex.client.request("test/echo") == {"text": "two\nlines", "ok": True}


async def test_a_ping_from_the_server_is_answered_and_the_connection_goes_on() -> None:
    pongs: list[bytes] = []

    async def app(peer: Peer) -> None:
        await peer.handshake()
        request = await peer.expect("test/echo")
        await peer.ping(b"are you there")
        while not peer.pong_received.is_set():
            await peer._pump()
        pongs.extend(peer.pongs)
        await peer.reply(request, {"ok": True})
        await peer.hold()

    with anyio.fail_after(10):
        async with fake_ws_server(app) as url, AsyncCodex(attach(url)) as codex:
            assert await codex.client.request("test/echo") == {"ok": True}
            assert pongs == [b"are you there"]


async def test_a_server_that_stops_reading_is_bounded_by_the_write_timeout_and_deadlines_win() -> (
    None
):
    async def deaf(peer: Peer) -> None:
        await peer.handshake()
        await anyio.sleep_forever()

    blob = {"blob": "x" * (16 * 1024 * 1024)}
    with anyio.fail_after(20):
        async with (
            fake_ws_server(deaf) as url,
            AsyncCodex(attach(url), limits=Limits(write_timeout=1)) as codex,
        ):
            start = anyio.current_time()
            with anyio.move_on_after(0.2) as scope:
                await codex.client.request("test/big", blob)
            assert scope.cancelled_caught
            assert anyio.current_time() - start < 0.9
            with pytest.raises(TransportClosedError, match="write_timeout"):
                await codex.client.request("test/more", blob)


# -- addresses and tokens ----------------------------------------------------------------------


def test_addresses_parse_ws_wss_and_unix_and_refuse_anything_else() -> None:
    assert Address.parse("ws://127.0.0.1:4500").host_header == "127.0.0.1:4500"
    assert Address.parse("wss://example.test/app").port == 443
    assert Address.parse("wss://example.test/app").target == "/app"
    assert Address.parse("unix:///tmp/codex.sock").path == "/tmp/codex.sock"
    with pytest.raises(ValueError, match="use ws://, wss:// or unix://"):
        Address.parse("http://127.0.0.1:4500")


def test_token_sources_are_exclusive_and_their_errors_name_the_source_not_the_token(
    tmp_path: Path,
) -> None:
    file = tmp_path / "token"
    file.write_text("  from-a-file\n")
    assert resolve_token(None, file, None) == "from-a-file"
    assert resolve_token(None, None, "T", {"T": "from-env"}) == "from-env"
    with pytest.raises(ValueError, match="not several"):
        resolve_token("value", file, None)
    with pytest.raises(ValueError, match="environment variable 'T' is empty"):
        resolve_token(None, None, "T", {})
    with pytest.raises(ValueError, match="cannot read the token file"):
        resolve_token(None, tmp_path / "missing", None)


def test_a_token_loses_one_trailing_newline_and_any_other_control_character_is_refused() -> None:
    assert resolve_token(None, None, "T", {"T": "mounted-secret\n"}) == "mounted-secret"
    assert resolve_token("typed-secret\r\n", None, None) == "typed-secret"
    for bad in ("two\nlines", "nul\x00inside", "tab\tinside", "twice\n\n"):
        with pytest.raises(ValueError, match="environment variable 'T' contains a control") as e:
            resolve_token(None, None, "T", {"T": bad})
        assert bad.split()[0][:3] not in str(e.value)
    with pytest.raises(ValueError, match="the token is empty"):
        resolve_token("\n", None, None)


def test_a_urls_userinfo_is_hidden_in_reprs_and_address_errors() -> None:
    url = "ws://alice:hunter2@127.0.0.1:4500"
    assert "hunter2" not in repr(CodexConfig(connect=url))
    assert "hunter2" not in repr(Address.parse(url))
    assert Address.parse(url).display == "ws://[REDACTED]@127.0.0.1:4500"
    for bad in ("http://alice:hunter2@127.0.0.1:4500", "ws://alice:hunter2@127.0.0.1:99999"):
        with pytest.raises(ValueError, match=r"use ws://|invalid port") as caught:
            Address.parse(bad)
        assert "hunter2" not in str(caught.value)


# -- codex-anyio serve -------------------------------------------------------------------------


async def test_the_serve_command_prints_where_it_listens_and_clients_attach_there() -> None:
    argv = [sys.executable, "-m", "codex_anyio", "serve", "--scripted", "--for", "60"]
    with anyio.fail_after(60):
        async with await anyio.open_process(argv, stderr=subprocess.DEVNULL) as process:
            assert process.stdout is not None
            printed = ""
            async for chunk in TextReceiveStream(process.stdout):
                printed += chunk
                if "attach:" in printed:
                    break
            fields = dict(line.split(": ", 1) for line in printed.splitlines() if ": " in line)
            url, token_file = fields["listening on"], fields["token file"]
            assert url.startswith("ws://127.0.0.1:")
            config = CodexConfig(connect=url, token_file=token_file)
            async with AsyncCodex(config) as codex:
                thread = await codex.thread_start()
                assert (await thread.run("hello")).final_response == "echo: hello"
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130
            assert not await anyio.Path(token_file).exists()


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codex_anyio", "serve", *args, "--for", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("listen", ["ws://0.0.0.0:0", "ws://[::]:0", "ws://192.0.2.1:0"])
def test_the_serve_command_refuses_an_address_beyond_loopback(listen: str) -> None:
    done = run_serve("--scripted", "--listen", listen)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"codex-anyio serve: {listen} is not a loopback address")
    assert "--allow-remote" in line


def test_the_serve_command_beyond_loopback_needs_allow_remote_and_a_token_file() -> None:
    done = run_serve("--scripted", "--listen", "ws://0.0.0.0:0", "--allow-remote")
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert "needs a token" in line
    assert "--token-file" in line
    helped = subprocess.run(
        [sys.executable, "-m", "codex_anyio", "serve", "--help"], capture_output=True, text=True
    )
    assert "--allow-remote" in helped.stdout
    assert "loopback" in helped.stdout


def test_the_serve_command_prints_one_error_when_the_runtime_cannot_start(
    tmp_path: Path,
) -> None:
    done = run_serve("--codex-home", str(tmp_path), "--config", 'approval_policy="untrusted"')
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = done.stderr.splitlines()  # not the runtime's whole stderr tail
    assert line.startswith("codex-anyio serve: the app-server exited before listening")
    assert "no longer supported" in line  # the runtime's own "Error: ..." line


@pytest.mark.parametrize("listen", ["ws://0.0.0.0:0", "ws://[::]:0", "ws://localhost:0"])
async def test_serving_from_python_refuses_an_address_beyond_loopback(listen: str) -> None:
    with anyio.fail_after(10), pytest.raises(ValueError, match=r"ws://127\.0\.0\.1:PORT"):
        async with serve_app_server(CodexConfig(), listen):
            pytest.fail(f"served on {listen}")
