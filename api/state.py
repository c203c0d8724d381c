"""What an API process holds, created in the lifespan and injected into handlers."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.broker import WakeupRedisBroker
from jobs.catalog import Catalog
from jobs.clients import Clients
from jobs.ratelimit import RateLimiter


@dataclass
class Services(Clients):
    """Per-process clients shared by every request: the common ones, plus the broker, catalogue and limiter."""

    broker: WakeupRedisBroker
    catalog: Catalog
    limiter: RateLimiter
