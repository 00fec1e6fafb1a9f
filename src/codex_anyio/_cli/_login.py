"""``codex-anyio login | login status | logout``: sign the runtime in, with no ``codex`` on PATH.

``pip install codex-anyio`` brings the runtime as a library (``openai-codex-cli-bin``) but puts
no ``codex`` command on PATH, so "run ``codex login``" is advice a new user cannot follow. These
commands start the bundled runtime with the user's ``CODEX_HOME`` (or ``--codex-home``) and
drive the library's own login helpers (:meth:`AsyncCodex.login_api_key`, ``login_chatgpt``,
``login_chatgpt_device_code``, ``logout``, ``account``); the runtime stores the login where
every later ``AsyncCodex()`` finds it.

An API key is read from stdin (``--api-key-stdin``; without echo on a terminal) or from an
environment variable (``--api-key-env NAME``), never from the command line (argv is visible to
every user of the machine), and it is never printed or logged (the wire log redacts it). The
browser and device-code flows print what the user must open, then wait for the runtime's
``account/login/completed``, bounded by ``--timeout``; a timeout, Ctrl-C, SIGTERM or SIGHUP
cancels the attempt on the runtime (shielded, bounded) before the command exits.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any, Final

import anyio

from .._api._account import LoginHandle
from .._api._codex import AsyncCodex
from .._protocol._generated import models as m
from .._wire._config import CodexConfig
from ._errors import EXIT_ERROR, UsageError, add_verbose
from ._signals import Stop, run_until_stopped

__all__ = ["EXIT_STATUSES", "add_login_parsers", "login_command", "logout_command"]

LOGIN_TIMEOUT: Final = 600.0
"""Default seconds a browser or device-code login may take before it is cancelled."""

CANCEL_TIMEOUT: Final = 5.0
"""Bound on cancelling an unfinished login on the runtime (the runtime answers at once)."""

MAX_KEY_CHARS: Final = 4096
"""Longest API key read from stdin (keys are under 200 characters): stdin is not a file."""

EXIT_STATUSES: Final = """\
exit status:
  0    logged in (login status: someone is logged in)
  1    not logged in: the login failed, timed out or the runtime refused it (login status:
       nobody is logged in)
  2    usage error: a bad argument, no API key on stdin or in the variable named
  130  cancelled by Ctrl-C (143: SIGTERM, 129: SIGHUP); the attempt is cancelled first
"""
"""What each exit status of ``codex-anyio login`` means (its ``--help`` epilog)."""


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--codex-home",
        default=None,
        metavar="DIR",
        help="where the runtime keeps its login (default: $CODEX_HOME, else ~/.codex)",
    )
    parser.add_argument(
        "--codex-bin",
        default=None,
        metavar="PATH",
        help="the codex executable to run (default: the bundled runtime)",
    )
    add_verbose(parser, default=argparse.SUPPRESS)


def add_login_parsers(commands: Any) -> None:
    login = commands.add_parser(
        "login",
        help="log the runtime in (API key, ChatGPT in a browser, device code); `login status`",
        description=(
            "Log the bundled Codex runtime in; the login is stored in CODEX_HOME, where every\n"
            "AsyncCodex() and Codex() finds it. Without an option: the ChatGPT browser login.\n"
            "`codex-anyio login status` says who is logged in."
        ),
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    login.add_argument(
        "action",
        nargs="?",
        choices=("status",),
        help="status: print who is logged in (exit 1: nobody)",
    )
    how = login.add_mutually_exclusive_group()
    how.add_argument(
        "--api-key-stdin",
        action="store_true",
        help="read an OpenAI API key from stdin (prompted without echo on a terminal)",
    )
    how.add_argument(
        "--api-key-env", metavar="NAME", default=None, help="take the API key from $NAME"
    )
    how.add_argument(
        "--chatgpt", action="store_true", help="log in with ChatGPT in a browser (the default)"
    )
    how.add_argument(
        "--device-code",
        action="store_true",
        help="log in with ChatGPT on another device: print a code and a URL",
    )
    login.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        default=LOGIN_TIMEOUT,
        help=f"seconds a browser or device-code login may take (default {LOGIN_TIMEOUT:g})",
    )
    _add_runtime_options(login)
    logout = commands.add_parser(
        "logout",
        help="forget the runtime's stored login",
        description="Remove the login stored in CODEX_HOME.",
    )
    _add_runtime_options(logout)


def _read_api_key(args: argparse.Namespace) -> str | None:
    """The key the arguments point at (None: not an API-key login).

    :raises UsageError: if they point at none.
    """
    if args.api_key_env is not None:
        key = os.environ.get(args.api_key_env, "").strip()
        if not key:
            raise UsageError(f"the environment variable {args.api_key_env} is not set or empty")
        return key
    if not args.api_key_stdin:
        return None
    if sys.stdin is None:
        raise UsageError("--api-key-stdin needs a standard input")
    if sys.stdin.isatty():
        key = getpass.getpass("OpenAI API key (not echoed): ").strip()
    else:
        key = sys.stdin.read(MAX_KEY_CHARS + 1).strip()
    if not key:
        raise UsageError("no API key on stdin")
    if len(key) > MAX_KEY_CHARS or any(c.isspace() for c in key):
        raise UsageError("stdin does not hold one API key (a single line without spaces)")
    return key


def _config(args: argparse.Namespace) -> CodexConfig:
    return CodexConfig(codex_home=args.codex_home, codex_bin=args.codex_bin)


def _describe(account: m.GetAccountResponse) -> str | None:
    """Who is logged in, or None."""
    found = account.account
    if found is None:
        return None
    if isinstance(found, m.ApiKeyAccount):
        return "logged in with an API key"
    if isinstance(found, m.ChatgptAccount):
        who = f" as {found.email}" if found.email else ""
        plan = getattr(found.plan_type, "value", found.plan_type)
        return f"logged in with ChatGPT{who} ({plan} plan)"
    if isinstance(found, m.AmazonBedrockAccount):
        return "logged in with Amazon Bedrock"
    return f"logged in ({found.type})"


async def _status(codex: AsyncCodex) -> int:
    account = await codex.account()
    who = _describe(account)
    home = codex.metadata.codex_home
    if who is not None:
        print(f"{who} (CODEX_HOME {home})", flush=True)
        return 0
    needs = "" if account.requires_openai_auth else "; the model provider needs no OpenAI login"
    print(f"not logged in (CODEX_HOME {home}){needs}", flush=True)
    return EXIT_ERROR


async def _wait(handle: LoginHandle, seconds: float) -> int:
    """Wait for the outcome; on a timeout or a signal, cancel the attempt first."""
    try:
        with anyio.fail_after(seconds):
            outcome = await handle.wait()
    except TimeoutError:
        await _cancel(handle)
        _say(f"the login did not complete within {seconds:g} s; it was cancelled")
        return EXIT_ERROR
    except anyio.get_cancelled_exc_class():
        await _cancel(handle)
        _say("the login was cancelled")
        raise
    if not outcome.success:
        _say(f"the login failed: {outcome.error or 'the runtime gave no reason'}")
        return EXIT_ERROR
    return 0


async def _cancel(handle: LoginHandle) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_TIMEOUT):
        await handle.cancel()


def _say(message: str) -> None:
    print(f"codex-anyio login: {message}", file=sys.stderr, flush=True)


async def _login(args: argparse.Namespace, api_key: str | None, stop: Stop) -> int:
    async with AsyncCodex(_config(args), require_credentials=False) as codex:
        if args.action == "status":
            return await _status(codex)
        if api_key is not None:
            await codex.login_api_key(api_key)
            return await _status(codex)
        handle: LoginHandle
        if args.device_code:
            device = handle = await codex.login_chatgpt_device_code()
            print(
                f"to log in, open {device.verification_url} on any device and enter the code "
                f"{device.user_code}",
                flush=True,
            )
        else:
            browser = handle = await codex.login_chatgpt()
            print(f"to log in, open this URL in a browser:\n{browser.auth_url}", flush=True)
        print("waiting for the login to complete (Ctrl-C cancels it)", flush=True)
        status = EXIT_ERROR
        async with handle:
            # A signal cancels the wait, not the client: the login is cancelled on the runtime.
            with stop.here():
                status = await _wait(handle, args.timeout)
        return status or await _status(codex)


def login_command(args: argparse.Namespace) -> int:
    """Run ``codex-anyio login [status]``; the exit status is one of :data:`EXIT_STATUSES`."""
    ways = [args.api_key_stdin, args.api_key_env is not None, args.chatgpt, args.device_code]
    if args.action == "status" and any(ways):
        raise UsageError("`login status` takes no login option")
    api_key = _read_api_key(args)
    return run_until_stopped(lambda stop: _login(args, api_key, stop))


async def _logout(args: argparse.Namespace) -> int:
    async with AsyncCodex(_config(args), require_credentials=False) as codex:
        who = _describe(await codex.account())
        await codex.logout()
    print("logged out" if who else "not logged in (nothing to forget)", flush=True)
    return 0


def logout_command(args: argparse.Namespace) -> int:
    """Run ``codex-anyio logout``: 0 once no login is stored."""
    return run_until_stopped(lambda _: _logout(args))
