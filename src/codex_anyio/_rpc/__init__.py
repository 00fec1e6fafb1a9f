"""The JSON-RPC connection: requests and their answers, notifications and the streams that
carry them, server requests and their safe defaults, turn starts and interrupts.

``_connection`` owns one reader and one writer task and the table of requests in flight
(their records in ``_messages``); ``_turn_start`` is what the reader does with a
``turn/start`` response; ``_router`` routes notifications without ever blocking;
``_notifications`` holds the bounded streams; ``_server_requests`` the requests the runtime
sends us and their safe defaults, ``_server_tasks`` the tasks that answer them; ``_interrupt``
the one bounded interrupt procedure; ``_retry`` backoff on overload; ``_usage`` the token
accounting fed by the reader; ``_instrument`` the hooks telemetry plugs into.

Rules: it imports only ``_wire``, ``_protocol`` and the base modules; it knows no user API
object (``AsyncCodex``, ``Thread``), no product, and no telemetry library: instrumentation
reaches it through the :class:`~codex_anyio._rpc._instrument.Instrumentation` protocol.
"""
