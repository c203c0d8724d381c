"""Login brute-force protection, shared by every API process (Redis).

Two counters of failed logins, one per account (email) and one per client IP,
each living for a window of `login_lockout_seconds` from its first failure.
A counter at its limit locks: every further attempt, even with the right
password, is refused until the counter expires — a full lockout period after
the failure that reached the limit.

An attempt is counted *before* the password is checked (`begin`), atomically
with the check of the limits, and taken back if the password was right
(`succeeded`): so however many attempts run concurrently, at most the limit of
them ever reach the password check. A process that dies mid-attempt leaves a
counted failure behind, which errs on the safe side.

    login:fail:acct:<sha256(email)[:32]>    failures of one account (no email in key names)
    login:fail:ip:<address>                 failures from one client address
"""

from __future__ import annotations

import hashlib
import math

from redis.asyncio import Redis

from jobs.settings import Settings

_PREFIX = "login:fail:"

#: KEYS: account, ip. ARGV: account limit, ip limit, window ms.
#: Returns 0 when the attempt may proceed (and is counted), else the ms until the lock lifts.
_BEGIN = """
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2])}
local window = tonumber(ARGV[3])
local wait = 0
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= limits[i] then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      redis.call('PEXPIRE', key, window)
      ttl = window
    end
    wait = math.max(wait, ttl)
  end
end
if wait > 0 then
  return wait
end
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  -- The window starts at the first failure; reaching the limit starts a full lockout period.
  if n == 1 or n >= limits[i] then
    redis.call('PEXPIRE', key, window)
  end
end
return 0
"""

#: KEYS: account, ip. The password was right: the account starts afresh, the address gets its attempt back.
_SUCCEEDED = """
redis.call('DEL', KEYS[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then
  redis.call('DECR', KEYS[2])
end
return 0
"""


def _keys(email: str, ip: str) -> list[str]:
    account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return [f"{_PREFIX}acct:{account}", f"{_PREFIX}ip:{ip}"]


class LoginGuard:
    """Counts failed logins per account and per address, and locks either at its limit."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._begin = redis.register_script(_BEGIN)
        self._succeeded = redis.register_script(_SUCCEEDED)
        self._args = [settings.login_max_failures_per_account, settings.login_max_failures_per_ip,
                      settings.login_lockout_seconds * 1000]

    async def begin(self, email: str, ip: str) -> int:
        """Count an attempt as a failure until it proves otherwise; 0, or the seconds the caller is locked out."""
        wait_ms = int(await self._begin(keys=_keys(email, ip), args=self._args))
        return math.ceil(wait_ms / 1000) if wait_ms > 0 else 0

    async def succeeded(self, email: str, ip: str) -> None:
        """The password was right: clear the account's failures and uncount this attempt for the address."""
        await self._succeeded(keys=_keys(email, ip))
