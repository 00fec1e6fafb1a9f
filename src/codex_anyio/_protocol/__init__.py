"""The protocol's data: models generated from the pinned runtime's JSON Schema, their base
classes, and the cattrs rules that turn them into wire dicts and back.

The bottom layer with ``_exceptions`` and ``_json``: it imports nothing else of the package,
and everything above may import it. ``_generated/`` is written by ``nox -s codegen`` and never
edited by hand.
"""

from ._generated.converter import converter
from ._model import use_converter

use_converter(converter)
