"""Starting a runtime that others attach to: ``codex app-server --listen ws://...|unix://...``.

The other half of the WebSocket transport (``_wire._ws``): tests, demos and ``codex-anyio
serve`` start a listening runtime here and clients attach with ``CodexConfig(connect=...)``.
Built on ``_wire`` only.
"""

from .._public import publish
from ._server import RunningServer, serve_app_server

__all__ = ["RunningServer", "serve_app_server"]

publish(globals())
