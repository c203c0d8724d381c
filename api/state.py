"""What an API process holds, created in the lifespan and injected into handlers."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from jobs.broker import WakeupRedisBroker
from jobs.events import EventLog
from jobs.inflight import InFlight
from jobs.ratelimit import RateLimiter
from jobs.routes import Routes
from jobs.settings import Settings


@dataclass
class Services:
    """Per-process clients shared by every request."""

    settings: Settings
    pool: AsyncConnectionPool
    redis: Redis
    broker: WakeupRedisBroker
    events: EventLog
    routes: Routes
    limiter: RateLimiter
    inflight: InFlight
