"""The command line: ``codex-anyio demo | batch | serve``.

The top layer: it may use everything below (the products, ``testing`` for the scripted
model) and nothing imports it but ``__main__``. What lives here and nowhere else: argument
parsing, progress display, exit statuses, signal handling.
"""
