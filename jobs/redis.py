"""Redis clients that ride out a Redis restart.

A pooled connection to a Redis that restarted is dead, and the first command
on it fails. These clients retry a command on connection errors with a short
exponential back-off, so a restart costs a pause, not an error.
"""

from __future__ import annotations

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

#: Retries of one command on a broken connection (~0.05 + 0.1 + 0.2 + 0.4 s).
_RETRIES = 4


#: Connections one process may open at once. redis-py's asyncio pool fails the call after its
#: limit at once ("Too many connections"); this pool makes the call wait for a free connection
#: instead (up to `_POOL_WAIT_SECONDS`), so a burst of streams slows down rather than errs.
MAX_CONNECTIONS = 1_000
_POOL_WAIT_SECONDS = 20.0


def async_client(url: str, max_connections: int = MAX_CONNECTIONS) -> redis.asyncio.Redis:
    """An asyncio client for `url`, with a bounded pool that waits for a free connection."""
    from redis.asyncio.retry import Retry

    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=_POOL_WAIT_SECONDS,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), _RETRIES),
        retry_on_error=[ConnectionError, TimeoutError], health_check_interval=30,
    )
    return redis.asyncio.Redis.from_pool(pool)


def sync_client(url: str) -> redis.Redis:
    """A blocking client for `url` (the Dramatiq broker's)."""
    from redis.retry import Retry

    return redis.Redis.from_url(
        url, retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), _RETRIES),
        retry_on_error=[ConnectionError, TimeoutError], health_check_interval=30,
    )
