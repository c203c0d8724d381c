"""Dramatiq middleware of the worker, one per module (as Dramatiq keeps its own)."""

from __future__ import annotations

from workers.middleware.dead_letters import FailDeadLetters
from workers.middleware.heartbeat import Heartbeat
from workers.middleware.warm_up import WarmUp

__all__ = ["FailDeadLetters", "Heartbeat", "WarmUp"]
