"""The Dramatiq broker, shared by the API (which sends) and the workers (which consume).

Dramatiq's Redis consumer polls: when a queue is empty it sleeps with a
growing back-off, up to the worker timeout (1 s by default), so an idle pool
can take most of a second to notice an interactive job. `WakeupRedisBroker`
keeps Dramatiq's queues, Lua scripts and acks exactly as they are and adds a
wake-up signal: every enqueue also PUBLISHes on `<namespace>:wake:<queue>`,
and an idle consumer waits on that channel instead of sleeping. A consumer is
subscribed for its whole life, so a wake-up sent while it was fetching is
buffered on its socket and ends the next wait at once: no lost wake-ups.
Polling stays as the fallback, so a lost wake-up costs at most one back-off.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import DEFAULT_MAINTENANCE_CHANCE, MAINTENANCE_SCALE, RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware

from jobs.redis import sync_client
from jobs.settings import Settings

#: Actor that runs every client-submitted job; workers register one per queue
#: under this name prefix (`run_job:chat`, ...), the API only needs the name.
ACTOR_PREFIX = "run_job"


def actor_name(queue: str) -> str:
    """Name of the actor that consumes `queue`."""
    return f"{ACTOR_PREFIX}:{queue}"


def wake_channel(namespace: str, queue: str) -> str:
    """Pub/sub channel that wakes consumers of `queue`."""
    return f"{namespace}:wake:{queue}"


class WakeupRedisBroker(RedisBroker):
    """A `RedisBroker` whose enqueues wake idle consumers at once."""

    def __init__(self, *, wakeup: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wakeup = wakeup

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakeupConsumer if self.wakeup else _RedisConsumer

    def enqueue(self, message: dramatiq.Message, *, delay: int | None = None) -> dramatiq.Message:
        """Enqueue as Dramatiq does, then wake the queue's idle consumers."""
        message = super().enqueue(message, delay=delay)
        if self.wakeup and delay is None:
            self.client.publish(wake_channel(self.namespace, message.queue_name), b"1")
        return message


class _WakeupConsumer(_RedisConsumer):
    """Dramatiq's consumer, waiting on the wake channel instead of sleeping."""

    def __init__(self, broker: WakeupRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.last_beat = time.monotonic()
        self.pubsub = broker.client.pubsub(ignore_subscribe_messages=True)
        # Delayed-queue consumers (`<queue>.DQ`) are woken by the clock, not by enqueues.
        self.pubsub.subscribe(wake_channel(broker.namespace, queue_name))

    def __next__(self) -> Any:
        try:
            while True:
                if self.message_cache:
                    return super().__next__()
                messages = []
                if self.outstanding_message_count < self.prefetch:
                    self.message_cache = messages = self.broker.do_fetch(
                        self.queue_name, self.prefetch - self.outstanding_message_count
                    )
                self.last_beat = time.monotonic()
                if messages:
                    self.misses = 0
                    continue
                self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                if self.outstanding_message_count >= self.prefetch:
                    # Full: only an ack frees a slot, and acks are handled by our
                    # caller between calls, so return after a short nap. Dramatiq
                    # heartbeats only when it fetches; keep beating while busy, or a
                    # long job would make this live worker look dead.
                    if time.monotonic() - self.last_beat > 1.0:
                        self.broker.do_fetch(self.queue_name, 0)
                        self.last_beat = time.monotonic()
                    self.pubsub.get_message(timeout=min(backoff_ms, 10) / 1000)
                    return None
                self._drain_wakeups(backoff_ms / 1000)
                return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None

    def _drain_wakeups(self, timeout: float) -> None:
        """Block until a wake-up arrives (or `timeout`), then swallow any queued behind it."""
        if self.pubsub.get_message(timeout=timeout) is not None:
            while self.pubsub.get_message(timeout=0) is not None:
                pass

    def close(self) -> None:
        """Close the wake-up subscription along with the consumer."""
        try:
            self.pubsub.close()
        finally:
            super().close()


def make_broker(settings: Settings, middleware: list[Middleware] | None = None, *,
                maintenance: bool = False) -> WakeupRedisBroker:
    """The broker for this deployment's Redis.

    With `maintenance`, every broker command also runs Dramatiq's queue
    maintenance (requeueing dead workers' messages); the maintenance loop uses
    such a broker so a killed worker's job comes back within seconds instead of
    whenever a random command happens to trigger it.
    """
    if not settings.redis_url:
        raise SystemExit("REDIS_URL is not set (run `switchyard dev` to get an embedded Redis)")
    return WakeupRedisBroker(
        client=sync_client(settings.redis_url),
        middleware=middleware,
        namespace="switchyard",
        heartbeat_timeout=settings.heartbeat_timeout_ms,
        wakeup=settings.dispatch_wakeup,
        maintenance_chance=MAINTENANCE_SCALE if maintenance else DEFAULT_MAINTENANCE_CHANCE,
    )
