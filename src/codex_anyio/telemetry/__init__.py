"""OpenTelemetry spans and metrics for turns, tool items, server and client requests.

``opentelemetry`` is imported only when a real tracer or meter provider is configured (the
``[otel]`` extra). The connection knows telemetry only through the ``Instrumentation``
protocol of ``_rpc``; this package implements it.
"""

from .._public import publish
from ._telemetry import Telemetry

__all__ = ["Telemetry"]

publish(globals())
