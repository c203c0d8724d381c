"""What an API process holds, created in the lifespan and injected into handlers."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.broker import WakeupRedisBroker
from jobs.catalog import Catalog
from jobs.clients import Clients
from jobs.ratelimit import RateLimiter
from jobs.submitter import Submitter


@dataclass
class Services(Clients):
    """Per-process clients shared by every request: the common ones, plus the broker, catalogue and limiter."""

    broker: WakeupRedisBroker
    catalog: Catalog
    limiter: RateLimiter
    #: Writes the jobs submitted together in one transaction (group commit).
    submitter: Submitter = field(init=False)

    def __post_init__(self) -> None:
        self.submitter = Submitter(self)
