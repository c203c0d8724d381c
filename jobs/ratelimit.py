"""Request and token budgets per minute, shared by every process (Redis).

Used by workers for provider targets (RPM/TPM) and by the API for API keys
(requests per minute by tier). Fixed one-minute windows on Redis's clock: a
check-and-spend Lua script adds one request and its tokens only if both stay
within the limits, so the limits are never exceeded, whatever the number of
processes. A caller that does not fit learns how long until the window resets.
"""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis

from jobs.errors import RateLimited

#: Returns {milliseconds until the window resets if refused else 0, requests left, ms until reset}.
_SPEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = math.floor(now / 60000)
local rkey, tkey = KEYS[1] .. ':' .. window .. ':r', KEYS[1] .. ':' .. window .. ':t'
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local r = tonumber(redis.call('GET', rkey) or '0')
local used = tonumber(redis.call('GET', tkey) or '0')
local reset = (window + 1) * 60000 - now
if (rpm > 0 and r + 1 > rpm) or (tpm > 0 and used + tokens > tpm) then
  return {reset, math.max(rpm - r, 0), reset}
end
redis.call('INCR', rkey)
redis.call('PEXPIRE', rkey, 61000)
if tpm > 0 then
  redis.call('INCRBY', tkey, tokens)
  redis.call('PEXPIRE', tkey, 61000)
end
return {0, math.max(rpm - r - 1, 0), reset}
"""


class Budget(msgspec.Struct, frozen=True):
    """The outcome of one spend."""

    #: Seconds until the caller fits (0: spent, go ahead).
    wait: float
    #: Requests left in this window (when a request limit is set).
    remaining: int
    #: Seconds until the window resets.
    reset: float


class RateLimiter:
    """Spends per-minute budgets of named subjects (a target, an API key)."""

    def __init__(self, redis: Redis) -> None:
        self._spend = redis.register_script(_SPEND)

    async def spend(self, subject: str, *, rpm: int | None, tpm: int | None = None, tokens: int = 0) -> Budget:
        """Spend one request and `tokens` of `subject`'s budget, if they fit."""
        if not rpm and not tpm:
            return Budget(0.0, 0, 0.0)
        if tpm and tokens > tpm:
            raise RateLimited(f"request needs {tokens} tokens, more than {subject}'s {tpm} per minute",
                              target=subject)
        wait_ms, remaining, reset_ms = await self._spend(keys=[f"sy:rl:{{{subject}}}"],
                                                         args=[rpm or 0, tpm or 0, tokens])
        return Budget(int(wait_ms) / 1000, int(remaining), int(reset_ms) / 1000)
