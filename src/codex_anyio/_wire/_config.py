"""How to launch the app-server: :class:`CodexConfig`, and turning it into argv and env.

Field names and meanings follow the official ``openai_codex.CodexConfig`` so a program can
switch clients by changing an import; ``codex_home`` is added as a shortcut for
``env["CODEX_HOME"]``, the one variable every test and sandboxed deployment sets.

One mechanism launches every runtime: :meth:`CodexConfig.argv` makes the command line, and
the stdio transport runs it with :meth:`CodexConfig.environment`. The command line is the
bundled binary's (the default), ``command`` (a sandbox's way to start ``codex app-server``,
with the ``--config`` flags appended so that they reach the runtime through any wrapper that
passes its trailing arguments on), or ``launch_args_override`` (the low-level form: run as
given, nothing appended).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from .. import __about__
from .._redact import redact_text, url_repr

if TYPE_CHECKING:  # ssl costs ~10-30 ms to import; only wss:// needs it, and imports it
    import ssl


__all__ = ["CodexConfig", "runtime_path", "trust_store_environment"]

SHOWN_COMMAND_CHARS = 200
"""How much of a ``command`` an error message shows: enough to tell sandboxes apart."""


def runtime_path() -> Path:
    """The bundled ``codex`` executable of the pinned ``openai-codex-cli-bin`` wheel.

    It is a static executable (``static-pie``): copy it into an image (``COPY``), a container
    (``docker cp``) or mount it read-only into a sandbox, and start it there with
    ``CodexConfig(command=[..., "/path/in/sandbox/codex", "app-server"])``.

    :raises FileNotFoundError: if the runtime package is not installed.
    """
    try:
        import codex_cli_bin
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise FileNotFoundError(
            "the Codex runtime package 'openai-codex-cli-bin' is not installed; "
            "install it or pass CodexConfig(codex_bin=...)"
        ) from exc
    return Path(codex_cli_bin.bundled_codex_path())


TRUST_VARIABLES: Final = ("SSL_CERT_FILE", "SSL_CERT_DIR")
"""Where the runtime's HTTPS clients (rustls with the platform's roots) find their trust
store; 0.163.0 reads both again for every turn."""


def _check_trust_store(instance: object, attribute: object, value: object) -> None:
    if isinstance(value, str) and value in ("system", "minimal"):
        return
    if isinstance(value, os.PathLike) or (isinstance(value, str) and value):
        return
    raise ValueError(
        f"trust_store must be 'system', 'minimal' or the path of a PEM bundle, not {value!r}"
    )


def trust_store_environment(trust_store: str | os.PathLike[str]) -> dict[str, str]:
    """The runtime's environment variables for ``trust_store`` (none for ``"system"``).

    ``/dev/null`` serves as both the empty bundle and the empty certificate directory (the
    runtime reads no certificate from either and starts no TLS it does not need), so nothing
    has to be created or removed.
    """
    if trust_store == "system":
        return {}
    bundle = os.devnull if trust_store == "minimal" else os.path.abspath(trust_store)
    return {"SSL_CERT_FILE": bundle, "SSL_CERT_DIR": os.devnull}


def _commands_trust_overrides(env: Mapping[str, str]) -> list[str]:
    """``--config`` values that give the commands the agent runs the trust store they would
    have had (the runtime's own environment carries the minimal one, and commands inherit it):
    this process's ``SSL_CERT_FILE``/``SSL_CERT_DIR``, else OpenSSL's default locations,
    which is what an unset variable means to the tools that read them. Set per key
    (``shell_environment_policy.set.NAME``), so the rest of a user's policy stays as it is."""
    import ssl  # only on this opt-in path: ~10-30 ms to import

    defaults = ssl.get_default_verify_paths()
    fallback = {"SSL_CERT_FILE": defaults.openssl_cafile, "SSL_CERT_DIR": defaults.openssl_capath}
    overrides = []
    for name in TRUST_VARIABLES:
        value = env.get(name) or fallback[name]
        overrides += ["--config", f"shell_environment_policy.set.{name}={json.dumps(value)}"]
    return overrides


def _tuple_of_str(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(v) for v in value)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


@attrs.frozen(kw_only=True)
class CodexConfig:
    """Configuration for launching and identifying the Codex runtime.

    :param codex_bin: the ``codex`` executable; default: the one bundled in the pinned
        ``openai-codex-cli-bin`` wheel.
    :param command: the command line that starts ``codex app-server`` on stdio where it
        should run, e.g. in a sandbox: ``["docker", "exec", "-i", "-e", "CODEX_HOME", "C",
        "codex", "app-server"]``, ``["bwrap", ..., "codex", "app-server"]``, ``["ssh", "HOST",
        "codex", "app-server"]``. Each of ``config_overrides`` is appended as ``--config
        key=value`` (``codex app-server`` takes them after the subcommand), so they reach the
        runtime through any wrapper that passes its trailing arguments on (``ssh`` joins them
        into one remote shell line: quote values that hold spaces or quotes). The process gets
        :meth:`environment`, which reaches the runtime only where the wrapper passes its
        environment on (``bwrap``, ``unshare``, ``nsenter``, ``env``); ``docker``/``podman``
        ``exec`` need ``-e NAME`` for each variable, ``ssh`` passes none (``SendEnv``). Closing
        the client closes the command's stdin first: the runtime exits on end of input and
        ends the commands it started, however far the wrapper is from it (see
        ``stop_command`` for what may be left). Not with ``codex_bin`` or
        ``launch_args_override``.
    :param stop_command: run after the runtime (the ``command`` process) has ended, however
        the client closed, to end what is left inside the sandbox where the host cannot see
        it: e.g. ``["docker", "rm", "-f", "C"]`` for a container of its own. Its output is
        discarded; it gets 10 s (``STOP_COMMAND_TIMEOUT``) and then is killed; a failure
        is logged, never raised.
    :param launch_args_override: the low-level form of ``command``: the complete argv to run
        instead of ``codex [--config k=v ...] app-server --listen stdio://`` (e.g. a wrapper
        script or a fake server in tests), run as given: ``codex_bin`` and
        ``config_overrides`` are then ignored and nothing is appended.
    :param config_overrides: ``key=value`` strings passed as ``--config`` (TOML values).
    :param cwd: working directory of the app-server process.
    :param env: variables added to (and overriding) this process's environment.
    :param codex_home: shortcut for ``env["CODEX_HOME"]``, where the runtime keeps its config,
        sessions and logins.
    :param client_name: ``clientInfo.name`` sent in ``initialize``.
    :param client_title: ``clientInfo.title``.
    :param client_version: ``clientInfo.version``.
    :param experimental_api: ask for the experimental API surface (``dynamicTools``,
        ``currentTime/read``, ...). Needed for dynamic tools; on by default as in the
        official SDK.
    :param opt_out_notification_methods: notification methods the runtime then never sends
        on this connection (``initialize``'s ``capabilities.optOutNotificationMethods``):
        fewer lines for both sides to write, read and route. Those the client itself needs
        are never opted out, whatever is listed: a turn's end and its result (``turn/
        completed``, ``item/completed``, ``thread/tokenUsage/updated``, ``error``), withdrawn
        server requests, usage limits, and with telemetry on its watcher's
        (``item/started``). A stream, a subscription or an ``idle_timeout`` then sees none of
        the methods listed. ``codex_anyio.result_only_opt_outs()`` lists every method a
        ``TurnResult`` does not need (what ``codex-anyio batch`` opts out of).
    :param connect: attach to an app-server that is already running instead of spawning one:
        ``ws://HOST:PORT``, ``wss://HOST:PORT`` or ``unix:///path/to/socket`` (WebSocket over
        a unix socket). The launch fields above are then unused; closing the client closes the
        connection, never the server. Userinfo in the URL (``ws://user:password@host``) is
        not sent, and is hidden in every message, log line and repr.
    :param token: the bearer token for ``connect`` (``--ws-auth capability-token``). Kept out
        of ``repr`` and of every message and log line. One trailing newline is removed; any
        other control character (a newline, a NUL) is a ``ValueError`` naming the token's
        source, never its value.
    :param token_file: read the token from this file instead (surrounding whitespace
        stripped), e.g. the server's ``--ws-token-file``.
    :param token_env: read the token from this environment variable instead (a trailing
        newline removed, as for ``token``).
    :param ssl_context: TLS settings for ``wss://`` (default: the system's trust store).
    :param ready_timeout: before connecting, wait up to this many seconds for the server's
        ``/readyz`` to answer 200 (a server that is still starting); ``None``: connect at once.
        (The ``initialize`` handshake after that is bounded by ``Limits.initialize_timeout``.)
    :param trust_store: the TLS roots the runtime's own HTTPS clients trust. ``"system"``
        (default): whatever its environment gives it (``SSL_CERT_FILE``/``SSL_CERT_DIR``,
        else the system store). ``"minimal"``: none. For a model provider on loopback over
        plain HTTP (the scripted model, a local gateway), where the runtime makes no TLS
        connection: the runtime re-reads its trust store for every turn (the system store is
        hundreds of files), and not reading it halves the runtime's CPU per one-turn task
        (43 -> 19 ms, measured). Anything the runtime would fetch over HTTPS then fails
        certificate verification (the OpenAI API, a ChatGPT login's token refresh, MCP
        servers and OpenTelemetry exporters over ``https``, remote plugins): see
        ``docs/pool-and-batch.md``. A path: a PEM bundle of exactly the roots to trust
        (those your provider's certificate chain ends in). The commands the agent runs keep
        the trust store they would have had (``shell_environment_policy.set``; not with
        ``launch_args_override``, whose argv is used as given).
    :param wire_log: log every JSON-RPC line sent and received at DEBUG on the
        ``codex_anyio.wire`` logger, secrets redacted (also on when the environment variable
        ``CODEX_ANYIO_WIRE_LOG`` is set to ``1``). Checked once when the client starts; off,
        it costs nothing.
    """

    codex_bin: str | os.PathLike[str] | None = attrs.field(default=None, kw_only=False)
    command: tuple[str, ...] | None = attrs.field(default=None, converter=_tuple_of_str)
    stop_command: tuple[str, ...] | None = attrs.field(default=None, converter=_tuple_of_str)
    launch_args_override: tuple[str, ...] | None = attrs.field(
        default=None, converter=_tuple_of_str
    )
    config_overrides: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    cwd: str | os.PathLike[str] | None = None
    env: Mapping[str, str] | None = None
    codex_home: str | os.PathLike[str] | None = None
    client_name: str = "codex_anyio"
    client_title: str | None = "codex-anyio"
    client_version: str = __about__.__version__
    experimental_api: bool = True
    opt_out_notification_methods: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    connect: str | None = attrs.field(default=None, repr=url_repr)
    token: str | None = attrs.field(default=None, repr=False)
    token_file: str | os.PathLike[str] | None = None
    token_env: str | None = None
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, repr=False, eq=False)
    ready_timeout: float | None = None
    trust_store: str | os.PathLike[str] = attrs.field(
        default="system", validator=_check_trust_store
    )
    wire_log: bool = False

    def __attrs_post_init__(self) -> None:
        if self.command is None:
            return
        if not self.command:
            raise ValueError("CodexConfig(command=...) needs at least the program to run")
        clash = "launch_args_override" if self.launch_args_override is not None else None
        if self.codex_bin is not None:
            clash = "codex_bin"
        if clash is not None:
            raise ValueError(
                f"CodexConfig takes command or {clash}, not both: command is the whole "
                "command line that starts the app-server"
            )

    def resolve_bin(self) -> Path:
        """The executable to run: ``codex_bin`` or the pinned runtime's bundled binary."""
        if self.codex_bin is not None:
            return Path(self.codex_bin)
        return runtime_path()

    def shown_command(self) -> str | None:
        """``command`` as a shell line for error messages (shortened, credential-looking
        values such as ``-e OPENAI_API_KEY=...`` hidden), or None without one."""
        if self.command is None:
            return None
        line = redact_text(shlex.join(self.command))
        if len(line) > SHOWN_COMMAND_CHARS:
            line = line[: SHOWN_COMMAND_CHARS - 3] + "..."
        return line

    def argv(self, listen: str = "stdio://") -> list[str]:
        """The command line that starts the app-server on stdio (or on ``listen``)."""
        if self.launch_args_override is not None:
            return list(self.launch_args_override)
        overrides: list[str] = []
        if self.trust_store != "system":
            overrides += _commands_trust_overrides({**os.environ, **(self.env or {})})
        for override in self.config_overrides:
            overrides += ["--config", override]
        if self.command is not None:
            args = [*self.command, *overrides]
            # stdio:// is the default: a command that already says so must not say it twice.
            return args if listen == "stdio://" else [*args, "--listen", listen]
        return [os.fspath(self.resolve_bin()), *overrides, "app-server", "--listen", listen]

    def home(self) -> str:
        """The ``CODEX_HOME`` a runtime of this config keeps its config and threads in:
        ``codex_home``, else ``env``'s, else this process's, else the runtime's default
        ``~/.codex`` (what a sandbox must mount, where a pool looks for a thread)."""
        home = self.codex_home or (self.env or {}).get("CODEX_HOME") or os.environ.get("CODEX_HOME")
        return os.fspath(home) if home else os.path.expanduser("~/.codex")

    def environment(self) -> dict[str, str]:
        """This process's environment plus ``env``, ``codex_home`` and ``trust_store``.

        When the bundled binary is used, its helper folder (ripgrep) is put first on PATH, as
        the official SDK does, so the runtime's file search works out of the box. With
        ``command`` this is the wrapper's environment: whether it reaches the runtime is the
        wrapper's doing (see ``command``).
        """
        env = dict(os.environ)
        bundled = self.launch_args_override is None and self.command is None
        if bundled and self.codex_bin is None:
            try:
                import codex_cli_bin

                helper_dir = os.fspath(codex_cli_bin.bundled_path_dir())
            except (ImportError, AttributeError, OSError):  # pragma: no cover
                helper_dir = ""
            if helper_dir:
                env["PATH"] = helper_dir + os.pathsep + env.get("PATH", "")
        if self.env:
            env.update(self.env)
        if self.codex_home is not None:
            env["CODEX_HOME"] = os.fspath(self.codex_home)
        env.update(trust_store_environment(self.trust_store))
        return env
