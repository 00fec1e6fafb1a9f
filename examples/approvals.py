"""Approvals: decide, per request, whether the agent may run a command.

The default declines everything; ``ApprovalPolicy.accept_all()`` approves everything (only
for disposable sandboxes); ``ApprovalPolicy.ask(callback)`` lets your code decide.
"""

from __future__ import annotations

from _offline import run

from codex_anyio import ApprovalPolicy, AsyncCodex, Handlers, ServerRequest
from codex_anyio.testing import exec_command, message


async def only_safe_commands(request: ServerRequest) -> bool:
    command = str(request.params.command)  # e.g. "/bin/bash -lc 'touch notes.txt'"
    allowed = "touch notes.txt" in command and "rm " not in command
    print(f"approval asked for {command!r}: {'yes' if allowed else 'no'}")
    return allowed


async def main(codex: AsyncCodex) -> None:
    thread = await codex.thread_start()
    result = await thread.run("Create notes.txt, then delete everything.")
    print(result.final_response)


if __name__ == "__main__":
    run(
        main,
        [
            exec_command("touch notes.txt", escalate=True),
            exec_command("rm -rf ./*", escalate=True),
            message("Created notes.txt; deleting everything was not allowed."),
        ],
        approval_policy="on-request",
        handlers=Handlers(approvals=ApprovalPolicy.ask(only_safe_commands)),
    )
