"""The protocol's typed models, generated from the pinned runtime's JSON Schema.

Every definition of the schema is here under its schema name: params and responses of each
request (``ThreadStartParams``, ``ThreadStartResponse``), notification params
(``AgentMessageDeltaNotification``), items (``ThreadItem`` and its variants), and an
``Unknown...`` class per tagged union for values a newer runtime may send. Types and fields
absent from the stable schema say "Experimental" in their docstrings.

Named enums are ``str`` enums with the official SDK's member names (``TurnStatus.completed``,
``ReasoningEffort.high``); records have ``model_dump()``, ``model_dump_json()``,
``model_validate()``, ``model_validate_json()`` and ``to_wire()`` (see the README, "Models and
enums").
The official SDK's ``JsonObject``, ``RunInput``, ``ExternalMessage`` and ``Notification`` are
here too.
"""

from ._api._inputs import ExternalMessage, JsonObject, RunInput
from ._api._metadata import CodexMetadata, ServerInfo
from ._protocol._generated.models import *  # noqa: F403
from ._protocol._generated.models import __all__ as _generated_all
from ._rpc._notifications import Notification

__all__ = [
    *_generated_all,
    "CodexMetadata",
    "ExternalMessage",
    "JsonObject",
    "Notification",
    "RunInput",
    "ServerInfo",
]
