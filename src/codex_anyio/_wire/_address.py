"""Where a running app-server is and how we prove we may use it: a parsed ``ws://``,
``wss://`` or ``unix://`` address, and the bearer token from a value, a file or the environment.

Pure (no I/O but reading the token file), so address and token mistakes are reported before
anything connects, and the messages name the source of a token, never the token itself. The
userinfo of a URL (``ws://user:password@host``) is never shown either: every message, log line
and repr names an address by :attr:`Address.display`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

from .._redact import redact_url, url_repr

__all__ = ["Address", "check_token", "resolve_token"]


@attrs.frozen
class Address:
    """A parsed ``ws://HOST:PORT[/PATH]``, ``wss://...`` or ``unix:///PATH`` address."""

    url: str = attrs.field(repr=url_repr)
    scheme: str
    host: str
    port: int
    path: str
    """The HTTP target for TCP, the socket's file path for ``unix://``."""

    @classmethod
    def parse(cls, url: str) -> Address:
        """:raises ValueError: for a scheme other than ``ws``, ``wss`` or ``unix``."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        shown = redact_url(url)
        if scheme == "unix":
            path = parts.netloc + parts.path
            if not path:
                raise ValueError(f"{shown!r} names no socket path (unix:///path/to/socket)")
            return cls(url=url, scheme=scheme, host="localhost", port=0, path=path)
        if scheme not in ("ws", "wss"):
            raise ValueError(f"cannot connect to {shown!r}: use ws://, wss:// or unix://")
        if parts.hostname is None:
            raise ValueError(f"{shown!r} names no host")
        try:
            port = parts.port or (443 if scheme == "wss" else 80)
        except ValueError:
            raise ValueError(f"{shown!r} has an invalid port") from None
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return cls(url=url, scheme=scheme, host=parts.hostname, port=port, path=target)

    @property
    def display(self) -> str:
        """The URL as messages and logs show it: userinfo (a password) hidden."""
        return redact_url(self.url)

    @property
    def host_header(self) -> str:
        if self.scheme == "unix":
            return "localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def target(self) -> str:
        return "/" if self.scheme == "unix" else self.path


def check_token(value: str, source: str) -> str:
    """``value`` as a bearer token: one trailing newline (``\\n`` or ``\\r\\n``, as mounted
    secrets and ``echo`` leave) removed.

    :raises ValueError: if it is empty or holds any other control character (a newline, a NUL,
        ...), which no HTTP header may carry; the message names ``source``, never the value.
    """
    if value.endswith("\n"):
        value = value[:-2] if value.endswith("\r\n") else value[:-1]
    if not value:
        raise ValueError(f"the {source} is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(
            f"the {source} contains a control character (a newline, a NUL, ...), which an "
            "HTTP header cannot carry; check where it comes from"
        )
    return value


def resolve_token(
    token: str | None,
    token_file: str | os.PathLike[str] | None,
    token_env: str | None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The bearer token from a value, a file (surrounding whitespace stripped) or an
    environment variable (see :func:`check_token`).

    :raises ValueError: if more than one source is given, or the one given is empty, missing
        or holds control characters; the message names the source, never its content.
    """
    given = [s for s in (token, token_file, token_env) if s is not None]
    if len(given) > 1:
        raise ValueError("give one of token, token_file and token_env, not several")
    if token is not None:
        value = token
        source = "token"
    elif token_file is not None:
        source = f"token file {os.fspath(token_file)!r}"
        try:
            with open(token_file, encoding="utf-8") as file:
                value = file.read().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the {source}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ValueError(f"the {source} is not UTF-8 text") from None
    elif token_env is not None:
        source = f"token in environment variable {token_env!r}"
        value = (environ if environ is not None else os.environ).get(token_env, "")
    else:
        return None
    return check_token(value, source)
