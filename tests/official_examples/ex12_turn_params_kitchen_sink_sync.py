from pathlib import Path

from _bootstrap import runtime_config

from codex_anyio import ApprovalMode, Codex, Sandbox, TextInput
from codex_anyio.types import Personality, ReasoningEffort, ReasoningSummary

OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "actions": {
            "type": "array",
            "items": {"type": "string"},
        },
    },
    "required": ["summary", "actions"],
    "additionalProperties": False,
}

SUMMARY = ReasoningSummary.model_validate("concise")

PROMPT = (
    "Analyze a safe rollout plan for enabling a feature flag in production. "
    "Return JSON matching the requested schema."
)

with Codex(config=runtime_config()) as codex:
    thread = codex.thread_start(model="gpt-5.4", config={"model_reasoning_effort": "high"})

    turn = thread.turn(
        TextInput(PROMPT),
        approval_mode=ApprovalMode.deny_all,
        cwd=str(Path.cwd()),
        effort=ReasoningEffort.medium,
        model="gpt-5.4",
        output_schema=OUTPUT_SCHEMA,
        personality=Personality.pragmatic,
        sandbox=Sandbox.read_only,
        summary=SUMMARY,
    )
    result = turn.run()

    print("Status:", result.status)
    print("Text:", result.final_response)
    print("Usage:", result.usage)
