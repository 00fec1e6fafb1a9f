"""The wire: bytes to and from an app-server, and the processes that run one.

What lives here: launching the runtime (``_config``: argv and environment; ``_transport``:
the stdio process, its stderr tail, its shutdown; ``_reap``: what it started outside its
process group), attaching to one that listens (``_address``, ``_ws``), newline framing
(``_framing``) and the opt-in wire log (``_wire_log``, a transport wrapper).

Rules: nothing here knows JSON-RPC (no ids, no methods), and nothing here imports a layer
above it (``_rpc``, ``_api``, the products): the import-linter contracts in ``pyproject.toml``
say so, and ``nox -s lint`` checks them.
"""
