"""``ModelGateway``: a Responses API server on loopback that the runtime's model calls go to.

The runtime's model provider points at ``http://127.0.0.1:PORT/v1``; every ``POST
/v1/responses`` arrives here, is joined to its thread and turn (``_request.py``), answered
by the gateway's *answerer* (a policy function, a forward to an upstream endpoint, or a
cassette replay) and recorded as an :class:`Exchange`, live and, with ``record=``, in a
cassette. The HTTP side is ``_http.py`` (h11, imported when the gateway starts, so importing
this package needs no optional library).

What the gateway promises: it binds 127.0.0.1 only; a policy that raises fails that one call
(a 500 before the stream started, ``response.failed`` after) and the gateway lives on; a
runtime that drops a stream (an interrupted turn) cancels the answer, and the exchange says
``abandoned``; credentials never reach a record, a log line or an error message.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    aclosing,
    asynccontextmanager,
    suppress,
)
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._exceptions import ReplayMismatchError, TurnFailedError
from .._groups import Lifespan
from .._json import dumps
from .._redact import redact_text
from ._answerer import Policy, PolicyAnswerer
from ._events import (
    FLUSH,
    ClientGone,
    DropConnection,
    PlainResponse,
    ResponseEvent,
    StreamStart,
    decode_event,
    encode_event,
    failed_event,
    new_id,
)
from ._exchange import Exchange, ExchangeLog
from ._request import ModelRequest, redact_headers

if TYPE_CHECKING:
    from ._cassette import CassetteWriter
    from ._http import HttpRequest, ResponseWriter

__all__ = ["DEFAULT_PROVIDER", "SETTLE_TIMEOUT", "ModelGateway"]

logger = logging.getLogger("codex_anyio.gateway")

DEFAULT_PROVIDER: Final = "codex-anyio-gateway"
"""The model-provider id the gateway configures the runtime with."""

SETTLE_TIMEOUT: Final = 2.0
"""How long ``TurnResult`` waits (in all) for the gateway to finish recording a completed
turn's calls: the runtime reports the turn complete as soon as it has read the last event,
a moment before the gateway has closed that answer (or seen an interrupted stream drop)."""

KEEP_EXCHANGES: Final = 1024
"""Default of ``keep_exchanges``: the newest exchanges kept in memory."""

_PROVIDER_ID: Final = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml(value: Any) -> str:
    """A TOML value (strings as basic strings: JSON's escaping is valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return dumps(str(value)).decode()


class ModelGateway(Lifespan[None]):
    """A Responses API endpoint on ``127.0.0.1`` for the Codex runtime's model calls.

    Give exactly one source of answers:

    :param policy: an async generator function of the :class:`ModelRequest` yielding
        response events (see :data:`Policy`): the hook an RL loop samples its own model from.
    :param upstream: forward every call to this Responses endpoint (``https://…/v1``, a vLLM
        or SGLang server, another gateway), with the runtime's credentials passed through.
    :param cassette: replay this recorded cassette, with no network at all (a call it does
        not hold fails the turn with :class:`~codex_anyio.ReplayMismatchError`).

    And, for any of them:

    :param record: append every exchange to this JSONL cassette (created if missing; flushed
        after each exchange; see the cassette format in the documentation).
    :param logprobs: ask the upstream for token log-probabilities (adds
        ``message.output_text.logprobs`` to the request's ``include``); they are kept in the
        exchange's events and :attr:`Exchange.logprobs`.
    :param upstream_headers: extra headers sent upstream (an API key for a local server),
        overriding the runtime's own.
    :param upstream_timeout: seconds to wait for the upstream to connect, and then for each
        chunk of its answer (a slow model streams slowly, not never).
    :param port: the port to listen on (default: any free one).
    :param provider: the model-provider id written into the runtime's configuration.
    :param env_key: have the runtime send ``Authorization: Bearer $ENV_KEY`` (the variable
        named, read from the runtime's environment), for an upstream that needs a key.
    :param requires_openai_auth: have the runtime send its OpenAI login (API key or ChatGPT
        token) with every call, for an upstream that is OpenAI's own service.
    :param request_max_retries: the provider's ``request_max_retries`` (runtime default if
        None); tests set 0, so a scripted failure surfaces instead of being retried.
    :param stream_max_retries: the provider's ``stream_max_retries``, likewise.
    :param keep_exchanges: how many exchanges :meth:`exchanges` keeps in memory (the
        oldest are forgotten first; a cassette keeps all).
    :param on_exchange: called with each exchange once it is finished (from the gateway's
        task: it must not block; an exception it raises is logged and ignored).

    ``async with ModelGateway(...) as gateway`` starts listening; ``AsyncCodex(gateway=...)``,
    ``CodexPool(gateway=...)`` and ``Codex(gateway=...)`` configure their runtimes to use it
    (and start it for as long as they run if it is not running yet).
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        upstream: str | None = None,
        cassette: str | os.PathLike[str] | None = None,
        record: str | os.PathLike[str] | None = None,
        logprobs: bool = False,
        upstream_headers: Mapping[str, str] | None = None,
        upstream_timeout: float = 300.0,
        port: int = 0,
        provider: str = DEFAULT_PROVIDER,
        env_key: str | None = None,
        requires_openai_auth: bool = False,
        request_max_retries: int | None = None,
        stream_max_retries: int | None = None,
        keep_exchanges: int = KEEP_EXCHANGES,
        on_exchange: Callable[[Exchange], object] | None = None,
    ) -> None:
        sources = [
            name
            for name, value in (("policy", policy), ("upstream", upstream), ("cassette", cassette))
            if value is not None
        ]
        if len(sources) != 1:
            raise ValueError(
                "a ModelGateway answers from exactly one of policy=, upstream= or cassette= "
                f"(got {', '.join(sources) or 'none'})"
            )
        if not _PROVIDER_ID.match(provider):
            raise ValueError(f"provider must be letters, digits, '-' or '_', not {provider!r}")
        self._answerer: PolicyAnswerer
        if policy is not None:
            self._answerer = PolicyAnswerer(policy)
        elif upstream is not None:
            from ._forward import ForwardAnswerer

            self._answerer = ForwardAnswerer(
                upstream,
                headers=upstream_headers,
                timeout=upstream_timeout,
                logprobs=logprobs,
            )
        else:
            assert cassette is not None
            from ._replay import ReplayAnswerer

            self._answerer = ReplayAnswerer(os.fspath(cassette))
        self.record_path = None if record is None else os.fspath(record)
        """The cassette this gateway appends to (None: it records nothing)."""
        self._port_wanted = port
        self._port: int | None = None
        self.provider = provider
        self._provider_options: dict[str, Any] = {
            key: value
            for key, value in (
                ("env_key", env_key),
                ("requires_openai_auth", requires_openai_auth or None),
                ("request_max_retries", request_max_retries),
                ("stream_max_retries", stream_max_retries),
            )
            if value is not None
        }
        self._log = ExchangeLog(keep_exchanges)
        self._on_exchange = on_exchange

    # -- what the runtime is configured with -------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the gateway is listening."""
        return self._port is not None

    @property
    def port(self) -> int:
        """The port it listens on (127.0.0.1)."""
        if self._port is None:
            raise RuntimeError("the ModelGateway is not running; use 'async with ModelGateway()'")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the model provider's ``base_url``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def _provider_table(self) -> dict[str, Any]:
        return {
            "name": "codex-anyio gateway",
            "base_url": self.base_url,
            "wire_api": "responses",
            **self._provider_options,
        }

    def config_overrides(self) -> tuple[str, ...]:
        """``--config`` overrides that point the runtime's model provider at this gateway
        (what ``AsyncCodex(gateway=...)`` adds to ``CodexConfig.config_overrides``)."""
        table = ", ".join(
            f"{key} = {_toml(value)}" for key, value in self._provider_table().items()
        )
        return (
            f"model_provider={_toml(self.provider)}",
            f"model_providers.{self.provider}={{ {table} }}",
        )

    def provider_config(self) -> str:
        """The same as ``config.toml`` text, for a runtime configured by hand."""
        lines = [
            f"model_provider = {_toml(self.provider)}",
            "",
            f"[model_providers.{self.provider}]",
        ]
        lines += [f"{key} = {_toml(value)}" for key, value in self._provider_table().items()]
        return "\n".join(lines) + "\n"

    # -- what it saw -----------------------------------------------------------------------

    def exchanges(
        self, *, thread_id: str | None = None, turn_id: str | None = None
    ) -> list[Exchange]:
        """The exchanges kept (see ``keep_exchanges``), in arrival order; of one thread, or
        one turn of it, if given. Calls still being answered are included."""
        return self._log.select(thread_id, turn_id)

    @property
    def forgotten(self) -> int:
        """How many exchanges were dropped from memory to stay within ``keep_exchanges``."""
        return self._log.forgotten

    # -- what a client needs (codex_anyio._api._model_calls.ModelCallSource) -----------------

    def ensure_running(self) -> AbstractAsyncContextManager[object]:
        """``async with``: run the gateway for the block unless it is running already."""
        return _NotOwned() if self.running else _Owned(self)

    def model_calls(self, thread_id: str, turn_id: str) -> list[Exchange]:
        """The exchanges of one turn, in order (``TurnResult.model_calls``)."""
        return self._log.select(thread_id, turn_id)

    async def settle(self, thread_id: str, turn_id: str) -> None:
        """Wait (at most :data:`SETTLE_TIMEOUT` seconds in all) until every known call of the
        turn is finished."""
        deadline = anyio.current_time() + SETTLE_TIMEOUT
        for exchange in self._log.select(thread_id, turn_id):
            remaining = deadline - anyio.current_time()
            if remaining <= 0 or not await exchange.wait_finished(remaining):
                return

    def turn_error(
        self, thread_id: str, turn_id: str, turn: Any, error: Any
    ) -> BaseException | None:
        """The error a failed turn raises: a :class:`ReplayMismatchError` if the gateway
        failed it on purpose; a ``TurnFailedError`` naming what went wrong if one of its
        calls failed on the gateway's side (a policy that raised, an unreachable upstream);
        else None (the client raises what the runtime reported)."""
        mismatch = self._answerer.turn_error(thread_id, turn_id)
        if mismatch is None:
            failures = [c.error for c in self._log.select(thread_id, turn_id) if c.error]
            if not failures:
                return None
            return TurnFailedError(turn, error, detail=f"model gateway: {failures[-1]}")
        return ReplayMismatchError(
            turn,
            error,
            thread_id=mismatch.thread_id,
            turn_id=mismatch.turn_id,
            index=mismatch.index,
            differences=mismatch.differences,
            recorded_thread_id=mismatch.recorded_thread_id,
            recorded_turn_id=mismatch.recorded_turn_id,
            reason=mismatch.reason,
        )

    # -- serving ---------------------------------------------------------------------------

    async def __aenter__(self) -> ModelGateway:
        await self._enter_lifespan()
        return self

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        from ._cassette import CassetteWriter
        from ._http import serve_connection

        async with AsyncExitStack() as stack:
            writer = None
            if self.record_path is not None:
                writer = stack.enter_context(CassetteWriter(self.record_path))
            await stack.enter_async_context(self._answerer.running())
            listener = await anyio.create_tcp_listener(
                local_host="127.0.0.1", local_port=self._port_wanted
            )
            await stack.enter_async_context(listener)
            self._recorder = writer
            self._port = listener.extra(anyio.abc.SocketAttribute.local_port)
            try:
                async with anyio.create_task_group() as tg:

                    async def connection(stream: anyio.abc.SocketStream) -> None:
                        try:
                            await serve_connection(stream, self._handle)
                        except Exception:  # never take the gateway down with one connection
                            logger.exception("model gateway: a connection failed")

                    tg.start_soon(listener.serve, connection, tg)
                    try:
                        yield
                    finally:
                        tg.cancel_scope.cancel()
            finally:
                self._port = None
                self._recorder = None

    _recorder: CassetteWriter | None = None

    async def _handle(self, http: HttpRequest, writer: ResponseWriter) -> None:
        request = ModelRequest.build(
            http.method, http.target, http.headers, http.body, index=self._log.next_index
        )
        exchange = Exchange(request)
        self._log.add(exchange)
        try:
            await self._answer(request, exchange, writer)
        except ClientGone:
            pass
        finally:
            exchange.abandoned = writer.client_gone and not (writer.ended or exchange.answered)
            exchange.finish()
            self._finished(exchange)

    def _finished(self, exchange: Exchange) -> None:
        if self._recorder is not None:
            try:
                self._recorder.write(exchange)
            except OSError as exc:
                logger.warning(
                    "model gateway: could not record an exchange in %s: %s", self.record_path, exc
                )
        if self._on_exchange is not None:
            try:
                self._on_exchange(exchange)
            except Exception:
                logger.exception("model gateway: on_exchange raised")

    async def _answer(
        self, request: ModelRequest, exchange: Exchange, writer: ResponseWriter
    ) -> None:
        """Send what the answerer yields as it comes, each burst of events in one write: an
        answerer that marks its bursts (the forward) is read in this task; any other runs
        in a task of its own, and a burst is what it has ready at once."""
        if self._answerer.marks_bursts:
            # It says itself when a burst is complete (FLUSH): no task, no queue needed.
            async with aclosing(self._answerer.answer(request)) as events:
                await self._deliver(
                    request, _stream_marked(events, exchange, writer), exchange, writer
                )
            return
        send, receive = anyio.create_memory_object_stream[Any](ANSWER_BUFFER)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_produce, self._answerer.answer(request), send)
            with receive:
                await self._deliver(
                    request, _stream_answer(receive, exchange, writer), exchange, writer
                )
            tg.cancel_scope.cancel()  # the answer is complete: stop whatever is left of it

    async def _deliver(
        self,
        request: ModelRequest,
        streaming: Awaitable[None],
        exchange: Exchange,
        writer: ResponseWriter,
    ) -> None:
        """Send the answer (``streaming`` does); never raises but a cancellation (the runtime
        gone)."""
        try:
            await streaming
        except DropConnection as exc:
            exchange.dropped = True
            exchange.error = redact_text(str(exc)) or None
            await writer.abort()
        except ClientGone:
            pass
        except Exception as exc:
            try:
                await self._policy_failed(request, exchange, writer, exc)
            except ClientGone:
                pass

    async def _policy_failed(
        self, request: ModelRequest, exchange: Exchange, writer: ResponseWriter, exc: Exception
    ) -> None:
        """One call fails, visibly to the runtime; the gateway goes on."""
        what = redact_text(f"{type(exc).__name__}: {exc}")
        exchange.error = f"the gateway's answer failed: {what}"
        logger.warning(
            "model gateway: the answer to thread %s, turn %s, call %d failed: %s",
            request.thread_id,
            request.turn_id,
            request.index,
            what,
        )
        if not writer.started:
            body = {"error": {"type": "server_error", "message": exchange.error}}
            await _send_plain(writer, exchange, PlainResponse(500, dumps(body)))
        elif not writer.ended:
            failed = failed_event(new_id("resp"), exchange.error)
            writer.send(encode_event(failed))
            await _flush(writer, exchange, [failed])
            await writer.end()


ANSWER_BUFFER: Final = 64
"""Events an answer may run ahead of the connection by; when the runtime reads slowly, the
answerer waits (its upstream with it)."""

BURST_BYTES: Final = 64 * 1024
"""A burst of ready events is written once it reaches this size, without waiting for more."""


@attrs.frozen
class _Raised:
    """What the answerer raised, delivered in order after the events before it."""

    error: Exception


async def _produce(
    events: AsyncGenerator[ResponseEvent, None], send: MemoryObjectSendStream[Any]
) -> None:
    """Iterate the answerer into ``send``. ``send_nowait`` first: an answerer that yields
    several events without waiting hands them all over before the writer runs, so they
    go out in one write; it waits only when ``ANSWER_BUFFER`` events are unsent."""
    with send:
        try:
            async with aclosing(events):
                async for event in events:
                    try:
                        send.send_nowait(event)
                    except anyio.WouldBlock:
                        await send.send(event)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return  # the answer was complete without the rest, or the runtime is gone
        except Exception as exc:
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await send.send(_Raised(exc))


async def _stream_answer(
    receive: MemoryObjectReceiveStream[Any], exchange: Exchange, writer: ResponseWriter
) -> None:
    """Send what an answerer running in a task of its own hands over; a burst (what it had
    ready at once) in one write."""
    pending: list[Any] = []
    """Events buffered, decoded and recorded once written."""
    while True:
        try:
            item = receive.receive_nowait()
        except anyio.WouldBlock:
            await _flush(writer, exchange, pending)
            try:
                item = await receive.receive()
            except anyio.EndOfStream:
                break
        except anyio.EndOfStream:
            break
        if isinstance(item, _Raised):
            await _flush(writer, exchange, pending)
            raise item.error
        if await _take(item, exchange, writer, pending):
            return
    await _end(writer, exchange, pending)


async def _stream_marked(
    events: AsyncIterator[Any], exchange: Exchange, writer: ResponseWriter
) -> None:
    """Send the answer of an answerer that marks its bursts (:data:`FLUSH` after each), read
    in this task: the forward, whose bursts are the upstream's chunks."""
    pending: list[Any] = []
    async for item in events:
        if item is FLUSH:
            await _flush(writer, exchange, pending)
        elif await _take(item, exchange, writer, pending):
            return
    await _end(writer, exchange, pending)


async def _take(item: Any, exchange: Exchange, writer: ResponseWriter, pending: list[Any]) -> bool:
    """Buffer one item of an answer (write a whole non-stream answer); whether it was that."""
    if isinstance(item, PlainResponse):
        if writer.started:
            raise RuntimeError("a PlainResponse after the stream had started")
        await _send_plain(writer, exchange, item)
        return True
    if isinstance(item, StreamStart):
        if writer.started:
            raise RuntimeError("a StreamStart after the stream had started")
        _start_stream(writer, exchange, item.headers)
        return False
    if not writer.started:
        _start_stream(writer, exchange, ())
    writer.send(encode_event(item))
    pending.append(item)
    if writer.buffered >= BURST_BYTES:
        await _flush(writer, exchange, pending)
    return False


async def _end(writer: ResponseWriter, exchange: Exchange, pending: list[Any]) -> None:
    """End the stream: the last burst and the end of the body in one write."""
    if not writer.started:
        _start_stream(writer, exchange, ())
    if writer.buffered:
        exchange.sent_first_byte()
    await writer.end()
    _record_sent(exchange, pending)


async def _flush(writer: ResponseWriter, exchange: Exchange, pending: list[Any]) -> None:
    """Write what is buffered; the events in it are then recorded as sent."""
    if not writer.buffered:
        return
    exchange.sent_first_byte()
    await writer.flush()
    _record_sent(exchange, pending)


def _record_sent(exchange: Exchange, pending: list[Any]) -> None:
    """Record the events just written, decoded: after the write, so decoding them for the
    record never delays the runtime."""
    for event in pending:
        exchange.add_event(decode_event(event))
    pending.clear()


class _NotOwned:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class _Owned:
    def __init__(self, gateway: ModelGateway) -> None:
        self._gateway = gateway

    async def __aenter__(self) -> ModelGateway:
        return await self._gateway.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._gateway.__aexit__(*exc_info)


async def _send_plain(writer: ResponseWriter, exchange: Exchange, answer: PlainResponse) -> None:
    body = answer.body.encode() if isinstance(answer.body, str) else answer.body
    headers = [("content-type", answer.content_type), *answer.headers]
    exchange.status = answer.status
    if answer.error is not None:
        exchange.error = redact_text(answer.error)
    exchange.response_headers = redact_headers(dict(answer.headers))
    exchange.body = body.decode("utf-8", "replace")
    exchange.sent_first_byte()
    await writer.respond(answer.status, body, headers)
    exchange.sent_body()


def _start_stream(
    writer: ResponseWriter, exchange: Exchange, extra: tuple[tuple[str, str], ...]
) -> None:
    exchange.status = 200
    exchange.response_headers = redact_headers(dict(extra))
    headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache"), *extra]
    writer.start(200, headers)
