"""Operability: Prometheus metrics, the /metrics /healthz /readyz endpoint, and logging.

Nothing here decides anything about money: these modules read engine state and count
outputs, at the edge, for people and alerting.
"""

from clearing.ops.http import OpsServer
from clearing.ops.logging import configure_logging, register_secret
from clearing.ops.metrics import Metrics

__all__ = ["Metrics", "OpsServer", "configure_logging", "register_secret"]
