from pathlib import Path

from _bootstrap import runtime_config

from codex_anyio import ApprovalMode, Codex, Sandbox, TextInput
from codex_anyio.types import Personality, ReasoningEffort, ReasoningSummary

REASONING_RANK = {
    "none": 0,
    "minimal": 1,
    "low": 2,
    "medium": 3,
    "high": 4,
    "xhigh": 5,
}
PREFERRED_MODEL = "gpt-5.4"


def _pick_highest_model(models):
    visible = [m for m in models if not m.hidden] or models
    preferred = next((m for m in visible if m.model == PREFERRED_MODEL or m.id == PREFERRED_MODEL), None)
    if preferred is not None:
        return preferred
    known_names = {m.id for m in visible} | {m.model for m in visible}
    top_candidates = [m for m in visible if not (m.upgrade and m.upgrade in known_names)]
    pool = top_candidates or visible
    return max(pool, key=lambda m: (m.model, m.id))


def _pick_highest_turn_effort(model) -> ReasoningEffort:
    if not model.supported_reasoning_efforts:
        return ReasoningEffort.medium

    best = max(
        model.supported_reasoning_efforts,
        key=lambda option: REASONING_RANK.get(option.reasoning_effort.value, -1),
    )
    return ReasoningEffort(best.reasoning_effort.value)


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


with Codex(config=runtime_config()) as codex:
    models = codex.models(include_hidden=True)
    selected_model = _pick_highest_model(models.data)
    selected_effort = _pick_highest_turn_effort(selected_model)

    print("selected.model:", selected_model.model)
    print("selected.effort:", selected_effort.value)

    thread = codex.thread_start(
        model=selected_model.model,
        config={"model_reasoning_effort": selected_effort.value},
    )

    first = thread.turn(
        TextInput("Give one short sentence about reliable production releases."),
        model=selected_model.model,
        effort=selected_effort,
    ).run()

    print("agent.message:", first.final_response)
    print("usage:", first.usage)

    second = thread.turn(
        TextInput("Return JSON for a safe feature-flag rollout plan."),
        approval_mode=ApprovalMode.deny_all,
        cwd=str(Path.cwd()),
        effort=selected_effort,
        model=selected_model.model,
        output_schema=OUTPUT_SCHEMA,
        personality=Personality.pragmatic,
        sandbox=Sandbox.read_only,
        summary=ReasoningSummary.model_validate("concise"),
    ).run()

    print("agent.message.params:", second.final_response)
    print("usage.params:", second.usage)
