"""The batch runner's Ray executor: the driver (``_driver``) and the actor (``_actor``).

Nothing imports this package at import time: ``codex_anyio.batch`` resolves its Ray names on
first use, so ``import codex_anyio.batch`` never imports Ray (a test and an import-linter
contract keep it so).
"""
