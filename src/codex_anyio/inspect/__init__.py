"""An Inspect AI agent: the Codex runtime per sample, its model calls answered by Inspect.

``codex_agent()`` is an Inspect ``@agent`` (usable as a solver): per sample it starts the
runtime, sends the sample's input as one turn, and returns the final response as the
completion. The runtime's model calls go through a :class:`~codex_anyio.ModelGateway` whose
policy (:class:`InspectModelPolicy`) calls the model Inspect is evaluating, so Inspect's
model roles, usage accounting and token limits apply; see ``docs/inspect.md``.

What this package owns: the agent (``_agent``), the Responses ⇄ Inspect translation
(``_translate``), the gateway policy (``_policy``), Inspect tools as dynamic tools
(``_tools``), the runtime's approval requests answered by Inspect's approvers
(``_approvals``) and the transcript records (``_transcript``). What it may import: the user API
(``_api``), the gateway, the wire config, and ``inspect_ai`` (the ``inspect`` extra), which
no other package of ``codex_anyio`` imports: ``import codex_anyio`` never loads Inspect.
"""

from .._public import publish
from ._agent import codex_agent
from ._policy import InspectModelPolicy
from ._transcript import SOURCE

__all__ = ["SOURCE", "InspectModelPolicy", "codex_agent"]

publish(globals())
