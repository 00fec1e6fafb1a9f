"""Secrets out of everything the library prints: the wire log, the "ignored a line" warning,
error messages and reprs.

One module, so every place that shows text from the wire or from a user's configuration hides
the same things the same way:

* **By key name** (:func:`is_secret_name`): a JSON value under a key that names a credential.
  Names are compared normalised (case-insensitive; ``_``, ``-``, ``.`` and spaces dropped; a
  plural ``s`` dropped), so ``token``, ``tokens``, ``apiKey``, ``apiKeys``, ``api_key``,
  ``X-Api-Key``, ``client_secret``, ``secrets``, ``passwords``, ``privateKey``,
  ``client_key`` and ``GITHUB_TOKEN`` are all caught, as is any name ending in one of
  :data:`SECRET_SUFFIXES`. Only strings are hidden: token *counts* (``inputTokens: 10``) stay.
* **By value** (:func:`redact_text`), inside any string, e.g. a command the model runs:
  ``NAME=value`` and ``"NAME": "value"`` where NAME looks secret (``GITHUB_TOKEN=...``,
  ``DB_PASSWORD=...``), ``--password X`` style flags, bearer/basic credentials, URL userinfo
  (``https://user:pass@host``), PEM private keys and the known token formats of
  :data:`_TOKEN_FORMATS` (OpenAI ``sk-``, GitHub ``ghp_``/``github_pat_``, AWS ``AKIA``,
  Slack, Google, Stripe, GitLab, Hugging Face, npm, JWTs).
* **Depth-bounded** (:func:`redact`): a message nested deeper than :data:`MAX_DEPTH` has its
  deeper content replaced by :data:`TOO_DEEP`, so a hostile 1,000-deep message cannot raise
  ``RecursionError`` in the logger (and take the connection with it).

Redaction is best effort against accidents (a secret in a debug log), not a sandbox: keep the
wire log off where its readers must not see the traffic.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "MAX_DEPTH",
    "REDACTED",
    "TOO_DEEP",
    "hides_values",
    "is_secret_name",
    "preview",
    "redact",
    "redact_text",
    "redact_url",
    "url_repr",
]

REDACTED: Final = "[REDACTED]"

TOO_DEEP: Final = "[NESTED TOO DEEPLY]"
"""What stands for content below :data:`MAX_DEPTH`."""

MAX_DEPTH: Final = 64
"""Containers deeper than this are not walked (nor shown): a real message is a dozen levels
deep; the bound keeps the walk's recursion far below Python's limit, and the output within
what the JSON encoder accepts (orjson: 255)."""

PREVIEW_CHARS: Final = 200
"""How much of a bad line a warning or an error message shows."""

_PREVIEW_WINDOW: Final = 4096
"""How much of a bad line is redacted before the preview is cut from it, so a secret that
straddles the cut is still recognised whole."""

SECRET_NAMES: Final = frozenset(
    {"token", "auth", "authorization", "password", "passwd", "pwd", "secret", "cookie"}
)
"""Normalised key names that are credentials on their own."""

SECRET_SUFFIXES: Final = (
    "token",
    "apikey",
    "secret",
    "password",
    "passwd",
    "passphrase",
    "authorization",
    "cookie",
    "credential",
    "privatekey",
    "clientkey",
    "secretkey",
    "accesskey",
    "sessionkey",
    "signingkey",
    "encryptionkey",
)
"""Normalised endings of credential names: ``accessToken``, ``OPENAI_API_KEY``,
``client_secret``, ``DB_PASSWORD``, ``secretAccessKey``..."""

_NAME_NOISE: Final = str.maketrans("", "", "_-. ")


def _normalise(name: str) -> str:
    name = name.lower().translate(_NAME_NOISE)
    if name.endswith("s") and not name.endswith("ss"):
        name = name[:-1]  # tokens, apiKeys, secrets, passwords, credentials, cookies
    return name


def is_secret_name(name: str) -> bool:
    """Whether a key, variable or flag named ``name`` holds a credential."""
    normalised = _normalise(name)
    return normalised in SECRET_NAMES or normalised.endswith(SECRET_SUFFIXES)


def hides_values(key: str) -> bool:
    """Whether every string under the JSON key ``key`` is hidden: a credential's key, or a
    header map's (``headers``, ``extraHeaders``, ...), whose values are credentials as often
    as not."""
    return is_secret_name(key) or key.lower().endswith("headers")


_TOKEN_FORMATS: Final = (
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:.|\n)*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
    r"\bsk-[A-Za-z0-9_-]{12,}",  # OpenAI, Anthropic (sk-ant-)
    r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{10,}",  # Stripe
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bglpat-[A-Za-z0-9_-]{20,}",  # GitLab
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}",  # Slack
    r"\bAIza[0-9A-Za-z_-]{35}",  # Google
    r"\bhf_[A-Za-z0-9]{30,}",  # Hugging Face
    r"\bnpm_[A-Za-z0-9]{36}",
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",  # JWT
)
_KNOWN: Final = re.compile("|".join(_TOKEN_FORMATS))
_SCHEME_CREDENTIAL: Final = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}")
_USERINFO: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@\"'<>]+@")
_VALUE: Final = r"(\[REDACTED\]|\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;&|)}\]]+)"
"""A value after ``NAME=``: an earlier pass's marker, a quoted string, or a bare word."""
_ASSIGNMENT: Final = re.compile(r"([\"']?)\b([A-Za-z_][A-Za-z0-9_.-]*)\1(\s*[=:]\s*)" + _VALUE)
_FLAG: Final = re.compile(r"(?<![\w-])(--?[A-Za-z][A-Za-z0-9_-]*)(\s+)(?!-)" + _VALUE)


def _is_count(name: str, value: str) -> bool:
    """``max_tokens=100``: a token count, not a token."""
    return value.isdigit() and _normalise(name).endswith("token")


def _assignment(match: re.Match[str]) -> str:
    value = match.group(4)
    if not is_secret_name(match.group(2)) or _is_count(match.group(2), value):
        return match.group(0)
    quote = value[0] if value[:1] in ("'", '"') else ""
    name_quote, name, separator = match.group(1, 2, 3)
    return f"{name_quote}{name}{name_quote}{separator}{quote}{REDACTED}{quote}"


def _flag(match: re.Match[str]) -> str:
    name = match.group(1).lstrip("-")
    if not is_secret_name(name) or _is_count(name, match.group(3)):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{REDACTED}"


def redact_text(text: str) -> str:
    """``text`` with every credential-looking value replaced (see the module docstring)."""
    text = _KNOWN.sub(REDACTED, text)
    text = _SCHEME_CREDENTIAL.sub(rf"\1\2{REDACTED}", text)
    text = _USERINFO.sub(rf"\1{REDACTED}@", text)
    text = _ASSIGNMENT.sub(_assignment, text)
    return _FLAG.sub(_flag, text)


def redact_url(url: str) -> str:
    """``url`` with its userinfo (``user:password@``) hidden, for messages and reprs."""
    return _USERINFO.sub(rf"\1{REDACTED}@", url)


def url_repr(value: object) -> str:
    """``repr`` of a field that may hold a URL, userinfo hidden (for ``attrs.field(repr=)``)."""
    return repr(redact_url(value) if isinstance(value, str) else value)


def redact(
    value: Any,
    *,
    all_values: bool = False,
    depth: int = 0,
    text: Callable[[str], str] = redact_text,
) -> Any:
    """A copy of decoded JSON with secrets replaced: strings under secret keys (and every
    value of a header map) by :data:`REDACTED`, credentials inside other strings (by
    ``text``: :func:`redact_text`, or a cached version of it for documents that repeat
    their strings), content deeper than :data:`MAX_DEPTH` by :data:`TOO_DEEP`."""
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return TOO_DEEP
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            hide = all_values or hides_values(name)
            out[key] = redact(item, all_values=hide, depth=depth + 1, text=text)
        return out
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            return TOO_DEEP
        return [redact(item, all_values=all_values, depth=depth + 1, text=text) for item in value]
    if isinstance(value, str):
        return REDACTED if all_values else text(value)
    return value


def preview(line: bytes | str, limit: int = PREVIEW_CHARS) -> str:
    """The head of a line for a warning or an error message: redacted, then cut to ``limit``
    characters (never the other way round, which could cut a secret past recognition)."""
    text = line if isinstance(line, str) else line[:_PREVIEW_WINDOW].decode("utf-8", "replace")
    text = redact_text(text[:_PREVIEW_WINDOW])
    if len(text) > limit:
        text = text[:limit] + "..."
    return text
