"""Per-target request and token budgets (RPM/TPM), shared by every worker (Redis).

Fixed one-minute windows on Redis's clock: a check-and-spend Lua script adds
one request and the request's worst-case tokens (prompt estimate +
max_tokens) only if both stay within the target's limits, so the limits are
never exceeded, whatever the number of workers. A caller that does not fit
either waits for the next window (when that is soon) or falls back.
"""

from __future__ import annotations

from redis.asyncio import Redis

from jobs.errors import RateLimited

#: Returns 0 when spent, else the milliseconds until the window resets.
_SPEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = math.floor(now / 60000)
local rkey, tkey = KEYS[1] .. ':' .. window .. ':r', KEYS[1] .. ':' .. window .. ':t'
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local r = tonumber(redis.call('GET', rkey) or '0')
local used = tonumber(redis.call('GET', tkey) or '0')
if (rpm > 0 and r + 1 > rpm) or (tpm > 0 and used + tokens > tpm) then
  return (window + 1) * 60000 - now
end
redis.call('INCR', rkey)
redis.call('PEXPIRE', rkey, 61000)
redis.call('INCRBY', tkey, tokens)
redis.call('PEXPIRE', tkey, 61000)
return 0
"""


class RateLimiter:
    """Spends per-target budgets."""

    def __init__(self, redis: Redis) -> None:
        self._spend = redis.register_script(_SPEND)

    async def try_spend(self, target: str, *, rpm: int | None, tpm: int | None, tokens: int) -> float:
        """Spend one request and `tokens`; returns 0, or the seconds until the budget resets."""
        if not rpm and not tpm:
            return 0.0
        if tpm and tokens > tpm:
            raise RateLimited(f"request needs {tokens} tokens, more than {target}'s {tpm} per minute", target=target)
        wait_ms = await self._spend(keys=[f"sy:rl:{{{target}}}"], args=[rpm or 0, tpm or 0, tokens])
        return int(wait_ms) / 1000
