"""Trajectories: a thread's model calls as ATIF, the Agent Trajectory Interchange Format.

:func:`export_thread` reads a thread (``thread/read``: its turns and their user messages) and
the model gateway's exchanges of it, and writes one ATIF document (``trajectory.json``, the
version Harbor 0.25 reads: :data:`ATIF_VERSION`) in which every model call is one agent step
with its exact usage, log-probabilities and joins; :func:`build_trajectory` does the same
from exchanges alone (a cassette read back, say).

What this package owns: the mapping from exchanges to ATIF. What it may import: the model
gateway's records and the user API (to read a thread); nothing imports it but the command
line and the batch runner above it.
"""

from .._public import publish
from ._atif import ATIF_VERSION, build_trajectory, export_thread, write_trajectory

__all__ = ["ATIF_VERSION", "build_trajectory", "export_thread", "write_trajectory"]

publish(globals())
