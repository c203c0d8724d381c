"""Circuit breakers shared by every worker process on every host (Redis).

    closed ──(N failures within the window)──► open ──(cooldown)──► half-open
      ▲                                                               │
      └────────────── probe succeeds ◄── exactly one probe ◄──────────┘
                       (probe fails: open again)

State lives in four keys per target, changed only by Lua scripts, so the
"one probe" rule holds across processes. An operator can force a circuit
open (the target is skipped: fallback takes over) or closed (failures never
open it) for maintenance, and hand it back (`force`, `/v1/admin/providers`).
Each call is also counted per minute (`record_call`) for the operators' view
of error rates and RPM/TPM use (`target_states`). Only transient failures
(`ProviderOverloaded`) count; a rejected request says nothing about the
target's health. Time is Redis's clock, so hosts with skewed clocks agree.
pybreaker's Redis storage was considered: its half-open transition is not
atomic across processes, which is the property this module exists for.
"""

from __future__ import annotations

import time
from enum import IntEnum, StrEnum
from typing import cast

import msgspec
from redis.asyncio import Redis

from jobs.errors import CircuitOpen

_NOW_MS = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)"

#: 1 = closed (go), 2 = half-open and this caller is the probe, 0 = rejected.
_ALLOW = _NOW_MS + """
local forced = redis.call('GET', KEYS[4])
if forced == 'open' then return 0 end
if forced == 'closed' then return 1 end
local open_until = tonumber(redis.call('GET', KEYS[2]) or '0')
if open_until == 0 then return 1 end
if now < open_until then return 0 end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then return 2 end
return 0
"""

#: Returns 1 when this failure opened (or re-opened) the circuit.
_FAILURE = _NOW_MS + """
local threshold, window, cooldown, probe = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if redis.call('GET', KEYS[4]) then return 0 end
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


def _keys(target: str) -> list[str]:
    tag = f"sy:cb:{{{target}}}"
    return [f"{tag}:failures", f"{tag}:open_until", f"{tag}:probe", f"{tag}:forced"]


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
        return _keys(target)

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


class CircuitState(StrEnum):
    """What operators see of a circuit."""

    CLOSED = "closed"
    OPEN = "open"
    #: Cooled down: the next call is the probe.
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    FORCED_CLOSED = "forced_closed"


#: The `switchyard_circuit_state` gauge's value of each state.
GAUGE_VALUE = {CircuitState.CLOSED: 0, CircuitState.FORCED_CLOSED: 0, CircuitState.HALF_OPEN: 1,
               CircuitState.OPEN: 2, CircuitState.FORCED_OPEN: 2}


class TargetState(msgspec.Struct, frozen=True, kw_only=True):
    """One target's circuit and recent use."""

    target: str
    state: CircuitState
    #: While open: when the next probe is allowed.
    open_until_ms: int | None
    #: Transient failures counted in the current window.
    failures: int
    #: Calls and failed calls in the last 5 minutes, and the share that failed.
    calls_5m: int
    errors_5m: int
    error_rate_5m: float
    #: Requests and tokens in the last 60 s, and the target's limits (None: none set).
    rpm_used: int
    tpm_used: int
    rpm_limit: int | None = None
    tpm_limit: int | None = None


_USAGE_KEEP_SECONDS = 11 * 60


def _usage_key(target: str, minute: int) -> str:
    return f"sy:tu:{{{target}}}:{minute}"


async def record_call(redis: Redis, target: str, *, ok: bool, tokens: int) -> None:
    """Count one call of `target` in this minute's usage (best effort)."""
    key = _usage_key(target, int(time.time()) // 60)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hincrby(key, "calls", 1)
        if not ok:
            pipe.hincrby(key, "errors", 1)
        if tokens:
            pipe.hincrby(key, "tokens", tokens)
        pipe.expire(key, _USAGE_KEEP_SECONDS)
        await pipe.execute()


async def force(redis: Redis, target: str, state: str | None) -> None:
    """Force `target`'s circuit `open` or `closed`, or (None) hand it back to the breaker, reset."""
    failures, open_until, probe, forced = _keys(target)
    if state is None:
        await redis.delete(failures, open_until, probe, forced)
    else:
        await redis.set(forced, state)


async def target_states(redis: Redis, targets: dict[str, tuple[int | None, int | None]]) -> list[TargetState]:
    """The circuit and recent use of each target (`targets`: name -> (rpm limit, tpm limit))."""
    now = time.time()
    minute = int(now) // 60
    async with redis.pipeline(transaction=False) as pipe:
        for name in targets:
            failures, open_until, _probe, forced = _keys(name)
            pipe.get(forced)
            pipe.get(open_until)
            pipe.get(failures)
            for m in range(minute - 5, minute + 1):
                pipe.hgetall(_usage_key(name, m))
        replies = await pipe.execute()
    states, width = [], 3 + 6
    for i, (name, (rpm, tpm)) in enumerate(targets.items()):
        forced, open_until, failures, *usage = replies[i * width:(i + 1) * width]
        until = int(open_until or 0)
        if forced:
            state = CircuitState.FORCED_OPEN if forced == b"open" else CircuitState.FORCED_CLOSED
        elif until == 0:
            state = CircuitState.CLOSED
        else:
            state = CircuitState.OPEN if now * 1000 < until else CircuitState.HALF_OPEN
        minutes = [{k.decode(): int(v) for k, v in cast(dict[bytes, bytes], u).items()} for u in usage]
        calls = sum(u.get("calls", 0) for u in minutes[1:])
        errors = sum(u.get("errors", 0) for u in minutes[1:])
        # The last 60 s: this minute so far plus the matching part of the previous one.
        share = 1 - (now % 60) / 60
        rpm_used = minutes[-1].get("calls", 0) + round(minutes[-2].get("calls", 0) * share)
        tpm_used = minutes[-1].get("tokens", 0) + round(minutes[-2].get("tokens", 0) * share)
        states.append(TargetState(
            target=name, state=state, open_until_ms=until or None, failures=int(failures or 0), calls_5m=calls,
            errors_5m=errors, error_rate_5m=round(errors / calls, 4) if calls else 0.0, rpm_used=rpm_used,
            tpm_used=tpm_used, rpm_limit=rpm, tpm_limit=tpm,
        ))
    return states
