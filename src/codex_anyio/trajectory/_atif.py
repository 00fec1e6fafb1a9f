"""Exchanges to ATIF (``ATIF-v1.8``, what Harbor 0.25's ``harbor.models.trajectories``
validate).

The mapping, per turn in order:

* one ``user`` step: the turn's user message (from ``thread/read`` when the thread is read,
  else the last user text of the turn's first model call);
* one ``agent`` step per model call (``llm_call_count`` 1): ``message`` is the text the model
  answered, ``tool_calls`` the functions it called (``tool_call_id`` is the call id the
  runtime answers with), ``observation`` what each of those tools returned (the
  ``function_call_output`` the runtime sent back in the turn's next call), ``metrics`` the
  call's exact usage (``prompt_tokens`` = input tokens, cached included; ``cached_tokens``;
  ``completion_tokens``) and ``logprobs`` when the upstream returned them, and ``extra`` the
  joins (``thread_id``, ``turn_id``, ``call_index``, ``request_kind``), the HTTP status, the
  timings, and ``abandoned``/``dropped``/``error`` for a call that did not complete. A failed
  call is a step too, so its cost is not lost.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .. import __about__
from .._atomic import write_atomically
from .._json import dumps, loads
from ..gateway._gateway import ModelGateway

if TYPE_CHECKING:
    from .._api._codex import AsyncCodex
    from ..gateway._exchange import Exchange

__all__ = ["ATIF_VERSION", "build_trajectory", "export_thread", "write_trajectory"]

ATIF_VERSION: Final = "ATIF-v1.8"
"""The ATIF version written (the default of Harbor 0.25's ``Trajectory``)."""

AGENT_NAME: Final = "codex"


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def _arguments(raw: Any) -> dict[str, Any]:
    """A tool call's arguments as the object ATIF wants (raw text kept under ``input``)."""
    if isinstance(raw, dict):
        return raw
    try:
        parsed = loads(str(raw).encode()) if raw else {}
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"input": raw}


def _message_text(item: Mapping[str, Any]) -> str:
    parts = item.get("content") or ()
    return "".join(
        str(part.get("text", "")) for part in parts if isinstance(part, dict) and "text" in part
    )


def _outputs(exchange: Exchange) -> tuple[str, list[dict[str, Any]]]:
    """The assistant text and the ATIF tool calls of one model call."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in exchange.output_items:
        kind = item.get("type")
        if kind == "message":
            texts.append(_message_text(item))
        elif kind in ("function_call", "custom_tool_call"):
            calls.append(
                {
                    "tool_call_id": str(item.get("call_id") or item.get("id") or ""),
                    "function_name": str(item.get("name") or ""),
                    "arguments": _arguments(item.get("arguments", item.get("input"))),
                }
            )
    return "\n\n".join(t for t in texts if t), calls


def _returned(request_input: Iterable[Any]) -> dict[str, Any]:
    """What the tools returned, by call id, as the runtime sent it back to the model."""
    found: dict[str, Any] = {}
    for item in request_input:
        if isinstance(item, dict) and item.get("type") in (
            "function_call_output",
            "custom_tool_call_output",
        ):
            output = item.get("output")
            found[str(item.get("call_id"))] = (
                output if isinstance(output, str) else dumps(output).decode()
            )
    return found


def _metrics(exchange: Exchange) -> dict[str, Any] | None:
    usage = exchange.usage or {}
    metrics: dict[str, Any] = {}
    if isinstance(usage.get("input_tokens"), int):
        metrics["prompt_tokens"] = usage["input_tokens"]
    if isinstance(usage.get("output_tokens"), int):
        metrics["completion_tokens"] = usage["output_tokens"]
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens")
    if isinstance(cached, int):
        metrics["cached_tokens"] = cached
    logprobs = [
        lp["logprob"] for lp in exchange.logprobs if isinstance(lp, dict) and "logprob" in lp
    ]
    if logprobs:
        metrics["logprobs"] = logprobs
    return metrics or None


def _extra(exchange: Exchange) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "thread_id": exchange.thread_id,
        "turn_id": exchange.turn_id,
        "call_index": exchange.index,
        "request_kind": exchange.request_kind,
        "status": exchange.status,
        "first_byte_s": exchange.first_byte,
        "total_s": exchange.total,
    }
    for flag in ("abandoned", "dropped"):
        if getattr(exchange, flag):
            extra[flag] = True
    if exchange.error:
        extra["error"] = exchange.error
    return extra


def _turns(exchanges: Sequence[Exchange]) -> list[tuple[str | None, list[Exchange]]]:
    """The exchanges by turn, turns in order of their first call, calls by index."""
    order: dict[str | None, list[Exchange]] = {}
    for exchange in sorted(exchanges, key=lambda e: e.started_at):
        order.setdefault(exchange.turn_id, []).append(exchange)
    return [(turn, sorted(calls, key=lambda e: e.index)) for turn, calls in order.items()]


def build_trajectory(
    exchanges: Sequence[Exchange],
    *,
    session_id: str | None = None,
    prompts: Mapping[str, str] | None = None,
    agent_name: str = AGENT_NAME,
    agent_version: str | None = None,
    notes: str | None = None,
) -> dict[str, Any]:
    """One thread's exchanges as an ATIF document (a JSON object; see the module docstring).

    :param session_id: the trajectory's ``session_id`` (default: the thread id).
    :param prompts: the user message of each turn, by turn id (default: taken from each
        turn's first model call).
    :raises ValueError: if there are no exchanges (ATIF needs at least one step).
    """
    if not exchanges:
        raise ValueError("a trajectory needs at least one model call")
    steps: list[dict[str, Any]] = []
    model_name: str | None = None
    for turn_id, calls in _turns(exchanges):
        first = calls[0]
        prompt = (prompts or {}).get(turn_id or "")
        if prompt is None:
            texts = first.request.user_texts()
            prompt = texts[-1] if texts else ""
        steps.append(
            {
                "step_id": len(steps) + 1,
                "timestamp": _timestamp(first.started_at),
                "source": "user",
                "message": prompt,
            }
        )
        for position, exchange in enumerate(calls):
            body = exchange.request.body if isinstance(exchange.request.body, dict) else {}
            model = body.get("model") if isinstance(body.get("model"), str) else None
            model_name = model_name or model
            text, tool_calls = _outputs(exchange)
            step: dict[str, Any] = {
                "step_id": len(steps) + 1,
                "timestamp": _timestamp(exchange.started_at),
                "source": "agent",
                "message": text,
                "llm_call_count": 1,
                "extra": _extra(exchange),
            }
            if model is not None:
                step["model_name"] = model
            if tool_calls:
                step["tool_calls"] = tool_calls
                following = calls[position + 1].request.input if position + 1 < len(calls) else ()
                returned = _returned(following)
                results = [
                    {
                        "source_call_id": call["tool_call_id"],
                        "content": returned[call["tool_call_id"]],
                    }
                    for call in tool_calls
                    if call["tool_call_id"] in returned
                ]
                if results:
                    step["observation"] = {"results": results}
            metrics = _metrics(exchange)
            if metrics is not None:
                step["metrics"] = metrics
            steps.append(step)
    agent_steps = [s for s in steps if s["source"] == "agent"]
    totals = {
        "total_prompt_tokens": sum(
            s.get("metrics", {}).get("prompt_tokens", 0) for s in agent_steps
        ),
        "total_completion_tokens": sum(
            s.get("metrics", {}).get("completion_tokens", 0) for s in agent_steps
        ),
        "total_cached_tokens": sum(
            s.get("metrics", {}).get("cached_tokens", 0) for s in agent_steps
        ),
        "total_steps": len(steps),
    }
    agent: dict[str, Any] = {
        "name": agent_name,
        "version": agent_version or f"codex-anyio {__about__.__version__}",
    }
    if model_name is not None:
        agent["model_name"] = model_name
    document: dict[str, Any] = {
        "schema_version": ATIF_VERSION,
        "session_id": session_id or exchanges[0].thread_id or "unknown",
        "agent": agent,
        "steps": steps,
        "final_metrics": totals,
    }
    if notes:
        document["notes"] = notes
    return document


def _prompts_of(read: Any) -> dict[str, str]:
    """Each turn's user message text, from a ``thread/read`` with its turns."""
    prompts: dict[str, str] = {}
    for turn in getattr(getattr(read, "thread", None), "turns", None) or ():
        texts = [
            str(getattr(part, "text", ""))
            for item in getattr(turn, "items", None) or ()
            if getattr(item, "type", None) == "userMessage"
            for part in getattr(item, "content", None) or ()
            if getattr(part, "text", None) is not None
        ]
        if texts:
            prompts[turn.id] = "\n\n".join(texts)
    return prompts


async def export_thread(
    codex: AsyncCodex,
    thread_id: str,
    path: str | os.PathLike[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The ATIF document of one thread of a client opened with ``gateway=``: its turns and
    user messages from ``thread/read``, its model calls from the gateway; written to ``path``
    (``trajectory.json``) if given. ``options`` go to :func:`build_trajectory`.

    :raises TypeError: if the client was not opened with a ``ModelGateway``.
    :raises ValueError: if its gateway saw no call of the thread (or has forgotten them: see
        ``keep_exchanges``).
    """
    gateway = codex.gateway
    if not isinstance(gateway, ModelGateway):
        raise TypeError("export_thread needs a client opened with gateway=ModelGateway(...)")
    exchanges = gateway.exchanges(thread_id=thread_id)
    read = await codex.client.thread_read(thread_id=thread_id, include_turns=True)
    options.setdefault("prompts", _prompts_of(read))
    document = build_trajectory(exchanges, session_id=thread_id, **options)
    if path is not None:
        write_trajectory(path, document)
    return document


def write_trajectory(path: str | os.PathLike[str], document: Mapping[str, Any]) -> Path:
    """Write an ATIF document as UTF-8 JSON (``trajectory.json``), replacing the file
    atomically (never half a document, whenever the writer is stopped); return the path."""
    return write_atomically(path, dumps(dict(document)) + b"\n")
