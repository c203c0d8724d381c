"""Per-user concurrent job limits, shared by every API process (Redis).

Each user has a sorted set of their unfinished job ids, scored by admission
time. Admission is one Lua script (drop entries older than the job expiry,
refuse at the limit, else add), so concurrent submissions on any number of
API processes never admit more than the limit. Whoever moves a job to a
terminal state removes it (`done`); the expiry sweeps ids a crash forgot.
"""

from __future__ import annotations

from uuid import UUID

from redis.asyncio import Redis

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, now - tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


def _key(owner_id: UUID) -> str:
    return f"sy:inflight:{{{owner_id}}}"


class InFlight:
    """Admits and retires a user's unfinished jobs."""

    def __init__(self, redis: Redis, expiry_seconds: int) -> None:
        self.redis = redis
        self.expiry_ms = expiry_seconds * 1000
        self._admit = redis.register_script(_ADMIT)

    async def admit(self, owner_id: UUID, job_id: UUID, limit: int) -> bool:
        """Count `job_id` against the owner's limit; False when the owner is at it."""
        return bool(await self._admit(keys=[_key(owner_id)], args=[str(job_id), limit, self.expiry_ms]))

    async def done(self, owner_id: UUID, job_id: UUID) -> None:
        """The job is finished (or was never created): free its slot."""
        await self.redis.zrem(_key(owner_id), str(job_id))

    async def count(self, owner_id: UUID) -> int:
        """Unfinished jobs counted for the owner."""
        return int(await self.redis.zcard(_key(owner_id)))
