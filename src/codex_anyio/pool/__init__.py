"""``CodexPool``: several supervised app-server processes behind one object.

Owns placement (least-loaded member, turn slots), supervision (restart on death, recycling)
and process-tree reaping at shutdown. Built on the user API (``_api``), as a user would;
the batch runner builds on it.
"""

from .._public import publish
from ._accounts import AccountStatistics
from ._pool import DEFAULT_MAX_TURNS, CodexPool, MemberStatistics, PoolStatistics
from ._thread import PooledThread

__all__ = [
    "DEFAULT_MAX_TURNS",
    "AccountStatistics",
    "CodexPool",
    "MemberStatistics",
    "PoolStatistics",
    "PooledThread",
]

publish(globals())
