"""Circuit breakers shared by every worker process on every host (Redis).

    closed ──(N failures within the window)──► open ──(cooldown)──► half-open
      ▲                                                               │
      └────────────── probe succeeds ◄── exactly one probe ◄──────────┘
                       (probe fails: open again)

State lives in three keys per target, changed only by Lua scripts, so the
"one probe" rule holds across processes. Only transient failures
(`ProviderOverloaded`) count; a rejected request says nothing about the
target's health. Time is Redis's clock, so hosts with skewed clocks agree.
pybreaker's Redis storage was considered: its half-open transition is not
atomic across processes, which is the property this module exists for.
"""

from __future__ import annotations

from enum import IntEnum

from redis.asyncio import Redis

from jobs.errors import CircuitOpen

_NOW_MS = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"

#: 1 = closed (go), 2 = half-open and this caller is the probe, 0 = rejected.
_ALLOW = _NOW_MS + """
local open_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if open_until == 0 then return 1 end
if now < open_until then return 0 end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then return 2 end
return 0
"""

#: Returns 1 when this failure opened (or re-opened) the circuit.
_FAILURE = _NOW_MS + """
local threshold, window, cooldown, probe = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if probe == '1' then
  redis.call('SET', KEYS[2], now + cooldown, 'PX', cooldown + 86400000)
  redis.call('DEL', KEYS[1], KEYS[3])
  return 1
end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], window) end
if n >= threshold and not redis.call('GET', KEYS[2]) then
  redis.call('SET', KEYS[2], now + cooldown, 'PX', cooldown + 86400000)
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

_SUCCESS = """
redis.call('DEL', KEYS[1])
if ARGV[1] == '1' then redis.call('DEL', KEYS[2], KEYS[3]) end
return 1
"""


class Pass(IntEnum):
    """What `allow` granted."""

    CLOSED = 1
    PROBE = 2


class CircuitBreakers:
    """Breakers for every target, keyed by `provider:model`."""

    def __init__(self, redis: Redis, *, threshold: int, window_seconds: float, cooldown_seconds: float) -> None:
        self.threshold = threshold
        self.window_ms = int(window_seconds * 1000)
        self.cooldown_ms = int(cooldown_seconds * 1000)
        self._allow = redis.register_script(_ALLOW)
        self._failure = redis.register_script(_FAILURE)
        self._success = redis.register_script(_SUCCESS)

    @staticmethod
    def _keys(target: str) -> list[str]:
        tag = f"sy:cb:{{{target}}}"
        return [f"{tag}:failures", f"{tag}:open_until", f"{tag}:probe"]

    async def allow(self, target: str, probe_timeout_seconds: float) -> Pass:
        """Permission to call `target`.

        Raises:
            CircuitOpen: the target is cooling down, or another worker holds the probe.
        """
        granted = int(await self._allow(keys=self._keys(target), args=[int(probe_timeout_seconds * 1000)]))
        if granted == 0:
            raise CircuitOpen(f"circuit open for {target}", target=target)
        return Pass(granted)

    async def failure(self, target: str, granted: Pass) -> bool:
        """Record a transient failure; True when it opened the circuit."""
        opened = await self._failure(
            keys=self._keys(target),
            args=[self.threshold, self.window_ms, self.cooldown_ms, "1" if granted is Pass.PROBE else "0"],
        )
        return bool(opened)

    async def success(self, target: str, granted: Pass) -> None:
        """Record a success: resets the failure count; a successful probe closes the circuit."""
        await self._success(keys=self._keys(target), args=["1" if granted is Pass.PROBE else "0"])
