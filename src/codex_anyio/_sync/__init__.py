"""The synchronous twin: ``Codex``, ``SyncThread``, ``SyncTurnHandle``.

One implementation, the async one: ``_portal`` runs it on an event-loop thread behind an
AnyIO blocking portal, ``_client`` forwards each sync method through it, ``_stream``
iterates an async event stream from a plain thread in batches. Nothing here re-implements
protocol logic; it imports ``_api`` and below, never a product.
"""
