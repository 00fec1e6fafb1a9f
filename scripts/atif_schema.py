"""Print the JSON Schema of Harbor's ATIF trajectory model (tests/data/atif-v1.8.schema.json).

    python scripts/atif_schema.py > tests/data/atif-v1.8.schema.json

Needs ``harbor`` (0.25.0 wrote the committed file; it requires Python 3.12 or later, which is
why the tests validate against this schema instead of importing Harbor's models). The
schema is pydantic's rendering of ``harbor.models.trajectories.Trajectory``; the model's own
checks beyond the schema (sequential step ids, tool-call references, agent-only fields) are
repeated in tests/test_trajectory.py.
"""

from __future__ import annotations

import json
import sys

from harbor.models.trajectories import Trajectory

json.dump(Trajectory.model_json_schema(), sys.stdout, indent=1, sort_keys=True)
sys.stdout.write("\n")
