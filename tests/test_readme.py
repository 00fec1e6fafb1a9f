"""Every code block of the README runs as written, offline; so does every Python block of the
documentation site's pages (``docs/``) that is not one of the README's.

**Python blocks.** Each block runs alone, as a script in a subprocess (``python -W error
block.py`` in an empty folder), with no preamble. Its environment is
``scripted_runtime(...).config.env``, which points the real runtime's ``CODEX_HOME`` at a
:class:`~codex_anyio.testing.ScriptedModel` on loopback. So ``AsyncCodex()``, ``Codex()``,
``CodexPool()`` and ``serve_app_server()``, written without arguments as a user would write
them, talk to the scripted model, as the README says. The model answers by prompt
(:func:`reply_to`): an essay stalls (so the blocks that time out really interrupt a turn), an
order question calls the ``lookup_order`` tool, and anything else gets a greeting. A block
that defines pytest tests (``def test_``) runs under pytest on both backends instead.

**Console blocks.** Every command line of every ``console`` block is in :data:`RUN` or
:data:`NOT_RUN`, and a test fails when a new one is neither. The ones that are safe offline
run: the bundled binary's path (with ``login --help``, not a login), ``codex-anyio batch``
on a small tasks file against the scripted model, and ``codex-anyio serve``, whose printed
lines are checked against the README's. :data:`NOT_RUN` says why each of the others is left
alone.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from codex_anyio.testing import (
    RecordedRequest,
    Reply,
    ScriptedModel,
    function_call,
    message,
    scripted_env,
    scripted_runtime,
    stall,
    write_codex_home,
)

from .conftest import offline_home, requires_netns

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
GREETING = "Hello from the scripted model."


def fenced_blocks(text: str) -> Iterator[tuple[str, str, str]]:
    """``(id, language, code)`` for each fenced block; the id is the section's heading."""
    heading, seen = "top", dict[str, int]()
    for match in re.finditer(r"^(#{2,4}) ([^\n]+)$|^```(\w*)\n(.*?)^```$", text, re.M | re.S):
        if match.group(1):
            heading = re.sub(r"[^a-z0-9]+", "-", match.group(2).lower()).strip("-")
            continue
        seen[heading] = seen.get(heading, 0) + 1
        block_id = heading if seen[heading] == 1 else f"{heading}-{seen[heading]}"
        yield block_id, match.group(3), match.group(4)


BLOCKS = list(fenced_blocks(README.read_text()))
PYTHON = {block_id: code for block_id, language, code in BLOCKS if language == "python"}


def guide_blocks() -> dict[str, str]:
    """The docs' Python blocks that are not the README's (those run above) nor includes of
    an example (``--8<-- "examples/x.py"``: tests/test_examples.py runs those)."""
    blocks = {}
    for page in sorted(DOCS.rglob("*.md")):
        name = page.relative_to(DOCS).with_suffix("").as_posix()
        for block_id, language, code in fenced_blocks(page.read_text()):
            if language == "python" and "--8<--" not in code and code not in PYTHON.values():
                blocks[f"{name}:{block_id}"] = code
    return blocks


GUIDES = guide_blocks()

EXPECTED = {
    "quickstart": f"completed {GREETING}",
    "cancellation-is-structured": "interrupted",
    "the-synchronous-client": GREETING,
    "approvals-user-input-dynamic-tools": "The tool said: order 42: shipped",
    "token-usage-and-usage-limits": "input_tokens",
    "many-turns-codexpool-and-codex-anyio-batch": GREETING,
    "codex-anyio-batch-2": "completed",
    "attaching-to-a-running-server-websocket-and-unix-sockets": GREETING,
    "recording-and-replaying-model-calls-the-gateway": "You said: Hello!\n0 turn 15",
    "running-in-a-sandbox": GREETING,
}
"""What some blocks print (a substring), beyond running cleanly."""


def prompt_of(request: RecordedRequest) -> str:
    """The text of the last user message the runtime sent the model."""
    texts = [
        part.get("text", "")
        for item in request.body.get("input", [])
        if item.get("type") == "message" and item.get("role") == "user"
        for part in item.get("content", [])
    ]
    return texts[-1] if texts else ""


def reply_to(request: RecordedRequest) -> Reply:
    items = request.body.get("input") or [{}]
    if 'source="goal"' in prompt_of(request) and items[-1].get("type") != "function_call_output":
        # A goal's turn (the runtime's continuation prompt): the model says it is met.
        return function_call("update_goal", {"status": "complete"})
    if outputs := request.function_call_outputs():
        return message(f"The tool said: {outputs[-1]['output']}")
    prompt = prompt_of(request)
    if "essay" in prompt:
        return stall(message("Once upon a time", deltas=2))
    if "order 42" in prompt:
        return function_call("lookup_order", {"order_id": "42"})
    return message(GREETING, deltas=3)


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def run_as_tests(code: str, folder: Path) -> str:
    (folder / "test_block.py").write_text(code)
    (folder / "conftest.py").write_text(
        "import pytest\n\n"
        "@pytest.fixture(params=['asyncio', 'trio'])\n"
        "def anyio_backend(request):\n"
        "    return request.param\n"
    )
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
    out = run([*argv, str(folder)], folder, {})
    assert re.search(r"\b2 passed\b", out), out
    return out


@pytest.fixture
def scripted_environment(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment under which ``AsyncCodex()`` talks to a scripted model."""
    with scripted_runtime(reply_to, directory=tmp_path / "scripted") as runtime:
        yield runtime.config.env


@pytest.mark.parametrize("block_id", sorted(PYTHON))
def test_the_readme_python_block_runs_as_written_offline(
    block_id: str, tmp_path: Path, scripted_environment: dict[str, str]
) -> None:
    code = PYTHON[block_id]
    work = tmp_path / "work"
    work.mkdir()
    if re.search(r"^(async )?def test_", code, re.M):
        run_as_tests(code, work)
        return
    (work / "block.py").write_text(code)
    out = run([sys.executable, "-W", "error", "block.py"], work, scripted_environment)
    assert EXPECTED.get(block_id, "") in out


@pytest.mark.parametrize("block_id", sorted(GUIDES))
def test_a_python_block_of_the_guides_runs_as_written_offline(
    block_id: str, tmp_path: Path, scripted_environment: dict[str, str]
) -> None:
    (tmp_path / "block.py").write_text(GUIDES[block_id])
    run([sys.executable, "-W", "error", "block.py"], tmp_path, scripted_environment)


def test_every_expectation_names_a_python_block_of_the_readme() -> None:
    assert set(EXPECTED) <= set(PYTHON)
    assert len(PYTHON) >= 12


# -- console blocks ----------------------------------------------------------------------------

BINARY = 'python -c "import codex_cli_bin; print(codex_cli_bin.bundled_codex_path())"'
BATCH = "codex-anyio batch tasks.jsonl -o results.jsonl --concurrency 16 --timeout 300 --attempts 2"
OFFLINE_BATCH = "codex-anyio batch tasks.jsonl -o results.jsonl --scripted"
SERVE = "codex-anyio serve"
LOGIN_STDIN = "codex-anyio login --api-key-stdin"
LOGIN_ENV = "codex-anyio login --api-key-env OPENAI_API_KEY"
LOGIN_STATUS = "codex-anyio login status"
LOGOUT = "codex-anyio logout"
LOGINS = "test_the_readme_login_commands_store_show_and_forget_an_api_key_offline"
SANDBOX_BATCH = (
    "codex-anyio batch tasks.jsonl -o results.jsonl --scripted --sandbox 'unshare --user "
    "--map-root-user --pid --fork --mount-proc -- {runtime} app-server'"
)
RUNTIME_PATH = "\"$(python -c 'import codex_anyio; print(codex_anyio.runtime_path())')\""

RUN = {
    f"$({BINARY}) login": "test_the_bundled_binary_the_readme_logs_in_with_is_there",
    LOGIN_STDIN: LOGINS,
    LOGIN_ENV: LOGINS,
    LOGIN_STATUS: LOGINS,
    LOGOUT: LOGINS,
    BATCH: "test_the_readme_batch_command_runs_a_tasks_file_against_the_scripted_model",
    OFFLINE_BATCH: "test_the_readme_offline_batch_command_needs_no_codex_set_up",
    SERVE: "test_the_readme_serve_command_prints_what_the_readme_shows",
    SANDBOX_BATCH: "test_the_readme_sandbox_batch_command_runs_each_task_in_a_pid_namespace",
}
"""Commands run here, and the test that runs each."""

NOT_RUN = {
    "codex-anyio login": (
        "the browser login completes on auth.openai.com; test_cli starts it against the real "
        "runtime in a private network namespace and cancels it"
    ),
    "codex-anyio login --device-code": (
        "the runtime fetches the code from auth.openai.com; test_cli runs the command against "
        "the fake app-server"
    ),
    "python -m pip install nox && python -m nox -s demo": (
        "CI's .ci/run runs it verbatim (and test_examples runs the demo itself)"
    ),
    "python -m pip install nox && python -m nox -s tests": (
        "CI's .ci/run runs it verbatim; it is the whole suite, this test among it"
    ),
    'python -m pip install "codex-anyio @ git+https://example.com/your/codex-anyio.git@COMMIT"': (
        "an install from a placeholder URL: the network"
    ),
    "python -m pip install /path/to/codex-anyio": "an install from a placeholder path",
    'python -m pip install "codex-anyio[trio] @ git+https://example.com/your/codex-anyio'
    '.git@COMMIT"': "an install from a placeholder URL: the network",
    "codex-anyio batch tasks.jsonl -o results.jsonl --ray auto --timeout 300 --attempts 2": (
        "needs a Ray cluster; Ray runs only inside scripts/loopback-netns (nox -s ray tests "
        "the Ray executor there)"
    ),
    "codex-anyio batch tasks.jsonl -o results.jsonl --ray ray://head:10001 --concurrency 32": (
        "needs a Ray cluster at a remote address"
    ),
    "sbatch --array=0-15 --wrap 'codex-anyio batch tasks.jsonl --shard $SLURM_ARRAY_TASK_ID/16 "
    "-o results-$SLURM_ARRAY_TASK_ID.jsonl'": (
        "needs SLURM; test_batch runs three --shard runs of one file"
    ),
    "cat results-*.jsonl > results.jsonl": "the second half of the SLURM example",
    "codex-anyio batch tasks.jsonl -o results.jsonl --gateway http://127.0.0.1:8000/v1 "
    "--record cassettes --trajectories trajectories": (
        "needs a Responses server on port 8000; test_batch_gateway runs --gateway against a "
        "scripted upstream on loopback, with --record"
    ),
    f"cp {RUNTIME_PATH} ./codex": (
        "copies the 300 MB runtime; test_sandbox checks runtime_path() is that executable"
    ),
    f"docker cp {RUNTIME_PATH} agent-1:/usr/local/bin/codex": (
        "needs a container engine and a container (none works on these machines)"
    ),
    "codex-anyio batch tasks.jsonl -o results.jsonl --sandbox 'bwrap --ro-bind / / --dev /dev "
    "--proc /proc --bind {cwd} {cwd} --bind {codex_home} {codex_home} --unshare-pid "
    "--die-with-parent -- {runtime} app-server'": (
        "needs bubblewrap on PATH, which these machines do not install (with one there, runtime "
        "0.163.0's own read-only command sandbox fails); test_batch_sandbox runs --sandbox "
        "templates with the runtime wheel's bwrap and with unshare"
    ),
    "codex-anyio batch tasks.jsonl -o results.jsonl --container python:3.12-slim --timeout 600": (
        "needs a container engine (none works on these machines) and a login; test_batch_sandbox "
        "checks the command lines it runs and skips its end-to-end test saying why"
    ),
    "inspect eval task.py --model openai/gpt-5": "needs the OpenAI service and a key",
    "INSPECT_ASYNC_BACKEND=trio inspect eval task.py --model mockllm/model --log-dir logs": (
        "mockllm's default output has no usage, so Inspect counts tokens with tiktoken, which "
        "downloads its encoding (the network); test_inspect runs the same eval of the agent "
        "in-process on both backends with mockllm outputs that carry their usage"
    ),
    "codex-anyio serve --listen unix:///tmp/codex.sock --scripted": (
        "a fixed path in /tmp shared by everyone on the machine; test_transports runs "
        "serve --scripted"
    ),
}
"""Commands not run, and why."""


def console_commands(code: str) -> list[str]:
    """The command lines of a console block: ``$ `` lines if it has any (the others are
    output), else every line but comments."""
    lines = [line.strip() for line in code.splitlines() if line.strip()]
    if any(line.startswith("$ ") for line in lines):
        return [line[2:].split("  #")[0].strip() for line in lines if line.startswith("$ ")]
    return [line for line in lines if not line.startswith("#")]


COMMANDS = [
    command
    for _, language, code in BLOCKS
    if language == "console"
    for command in console_commands(code)
]


def test_every_readme_command_is_run_here_or_says_why_not() -> None:
    assert set(COMMANDS) == set(RUN) | set(NOT_RUN)
    assert not set(RUN) & set(NOT_RUN)
    assert all(RUN[command] in globals() for command in RUN)


def test_the_bundled_binary_the_readme_logs_in_with_is_there(tmp_path: Path) -> None:
    path = Path(run(shlex.split(BINARY.replace("python", sys.executable, 1)), tmp_path, {}).strip())
    assert os.access(path, os.X_OK)
    # `login` itself reaches the service; its help is offline and proves the subcommand.
    assert "login" in run([str(path), "login", "--help"], tmp_path, {})


@requires_netns
def test_the_readme_login_commands_store_show_and_forget_an_api_key_offline(
    tmp_path: Path,
) -> None:
    key = "sk-readme-0123456789-not-a-real-key"
    env = {"CODEX_HOME": str(offline_home(tmp_path / "home")), "OPENAI_API_KEY": key}
    cli = str(Path(sys.executable).with_name("codex-anyio"))

    def shown(command: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        argv = ["unshare", "-rn", cli, *shlex.split(command)[1:]]  # the network: loopback only
        done = subprocess.run(
            argv, env={**os.environ, **env}, input=stdin, capture_output=True, text=True, timeout=60
        )
        assert key not in done.stdout + done.stderr
        return done

    assert shown(LOGIN_STDIN, stdin=key + "\n").returncode == 0
    status = shown(LOGIN_STATUS)
    assert (status.returncode, status.stdout.split(" (")[0]) == (0, "logged in with an API key")
    assert shown(LOGOUT).stdout == "logged out\n"
    assert shown(LOGIN_STATUS).returncode == 1
    assert shown(LOGIN_ENV).returncode == 0
    assert shown(LOGIN_STATUS).returncode == 0


def test_the_readme_batch_command_runs_a_tasks_file_against_the_scripted_model(
    tmp_path: Path, scripted_environment: dict[str, str]
) -> None:
    tasks = [{"id": str(i), "prompt": f"Say hello {i}."} for i in range(3)]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    command = shlex.split(BATCH)
    cli = str(Path(sys.executable).with_name("codex-anyio"))
    run([cli, *command[1:]], tmp_path, scripted_environment)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["status"], r["final_response"]) for r in rows) == [
        (str(i), "completed", GREETING) for i in range(3)
    ]


def test_the_readme_sandbox_batch_command_runs_each_task_in_a_pid_namespace(
    tmp_path: Path,
) -> None:
    tasks = [{"id": str(i), "prompt": f"Say hello {i}."} for i in range(2)]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    (tmp_path / "home").mkdir()
    cli = str(Path(sys.executable).with_name("codex-anyio"))
    run([cli, *shlex.split(SANDBOX_BATCH)[1:]], tmp_path, {"HOME": str(tmp_path / "home")})
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["status"]) for r in rows) == [("0", "completed"), ("1", "completed")]


def test_the_readme_offline_batch_command_needs_no_codex_set_up(tmp_path: Path) -> None:
    tasks = [{"id": str(i), "prompt": f"Say hello {i}."} for i in range(3)]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CODEX_HOME"}
    cli = str(Path(sys.executable).with_name("codex-anyio"))
    done = subprocess.run(
        [cli, *shlex.split(OFFLINE_BATCH)[1:]],
        cwd=tmp_path,
        env={**env, "HOME": str(tmp_path / "home")},  # no login, no config.toml
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["status"], r["final_response"]) for r in rows) == [
        (str(i), "completed", f"echo: Say hello {i}.") for i in range(3)
    ]


@pytest.mark.anyio
async def test_the_readme_serve_command_prints_what_the_readme_shows(tmp_path: Path) -> None:
    shown = next(code for _, language, code in BLOCKS if SERVE in code and language == "console")
    shown_keys = [line.split(": ", 1)[0] for line in shown.splitlines()[1:4]]
    cli = str(Path(sys.executable).with_name("codex-anyio"))
    with anyio.fail_after(60):
        async with ScriptedModel([]) as model:
            home = write_codex_home(tmp_path / "home", base_url=model.base_url)
            env = {**os.environ, **scripted_env(home)}
            argv = [cli, *shlex.split(SERVE)[1:]]
            async with await anyio.open_process(
                argv, env=env, cwd=tmp_path, stderr=subprocess.DEVNULL
            ) as process:
                assert process.stdout is not None
                printed = ""
                async for chunk in TextReceiveStream(process.stdout):
                    printed += chunk
                    if "attach:" in printed:
                        break
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 130
    lines = printed.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == shown_keys
    assert re.fullmatch(r"listening on: ws://127\.0\.0\.1:\d+", lines[0])
    token_file = lines[1].removeprefix("token file: ")
    assert lines[2] == (
        f"attach: CodexConfig(connect={lines[0].removeprefix('listening on: ')!r}, "
        f"token_file={token_file!r})"
    )
