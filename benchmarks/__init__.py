"""Benchmarks: codex-anyio beside the official SDK and a raw loop, in one run (`nox -s bench`)."""
