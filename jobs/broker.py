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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import DEFAULT_MAINTENANCE_CHANCE, MAINTENANCE_SCALE, RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware
from redis.asyncio import Redis as AsyncRedis

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
        self._fetch_live: Any = None
        self.scripts["dispatch"] = self.client.register_script(_DISPATCH_HEAD_FIRST)

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakeupConsumer if self.wakeup else _RedisConsumer

    def fetch_live(self, queue_name: str, prefetch: int) -> list[bytes]:
        """Dramatiq's fetch, passing over ids whose message was withdrawn (`withdraw`); see fetch_live.lua."""
        if self._fetch_live is None:
            self._fetch_live = self.client.register_script(_FETCH_LIVE)
        found: list[bytes] = self._fetch_live(keys=[self.namespace], args=[
            queue_name, self.broker_id, int(time.time() * 1000), prefetch, 10_000])
        return found

    def send_jobs(self, jobs: Iterable[Outgoing], chunk: int = 5_000) -> int:
        """Enqueue one message per (job id, queue), pipelined (see `send_jobs`); returns how many."""
        sent = 0
        for part in _chunks(jobs, chunk):
            with self.client.pipeline(transaction=False) as pipe:
                _write(pipe, self.namespace, part, self.wakeup)
                pipe.execute()
            sent += len(part)
        return sent

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
                    self.message_cache = messages = self.broker.fetch_live(
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


_FETCH_LIVE = (Path(__file__).parent / "fetch_live.lua").read_text()


def _head_first(script: str) -> str:
    """Dramatiq's dispatch script, putting messages that go *back* to a queue at its head, not its tail.

    Stock Dramatiq RPUSHes a dead worker's unacked messages (maintenance) and a
    stopping consumer's prefetched ones (`requeue`) behind everything waiting:
    with a backlog, a job whose worker was killed waited for the whole queue to
    drain (measured: 74 s median, 142 s max behind 10,000 jobs; scripts/chaos).
    They were taken from the head, so they go back there. New messages (`enqueue`)
    still go to the tail.
    """
    back = ('if redis.call("hexists", queue_messages, message_id) > 0 then\n'
            '{indent}redis.call("rpush", queue_full_name, message_id)')
    patched = script
    for indent in (" " * 20, " " * 16):  # maintenance, requeue
        old = back.format(indent=indent)
        if patched.count(old) != 1:
            raise RuntimeError("Dramatiq's dispatch.lua changed: review jobs/broker.py `_head_first`")
        patched = patched.replace(old, old.replace("rpush", "lpush"))
    return patched


_DISPATCH_HEAD_FIRST = _head_first(
    (Path(dramatiq.brokers.redis.__file__).parent / "redis" / "dispatch.lua").read_text())

#: The Redis key prefix of every queue.
NAMESPACE = "switchyard"


def job_message(job_id: str, queue: str) -> bytes:
    """The Dramatiq message that makes a worker run `job_id`; its Redis id is the job id."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name=actor_name(queue), args=(job_id,), kwargs={},
        options={"redis_message_id": job_id})
    return message.encode()


#: A job to send: (job id, queue), or (job id, queue, its `job_message`) when built beforehand.
Outgoing = tuple[str, str] | tuple[str, str, bytes]


def _chunks(jobs: Iterable[Outgoing], size: int) -> Iterator[list[Outgoing]]:
    part: list[Outgoing] = []
    for job in jobs:
        part.append(job)
        if len(part) >= size:
            yield part
            part = []
    if part:
        yield part


#: Enqueue/completion rates are counted in buckets of this many seconds, kept for RATE_BUCKETS + 2 of them.
RATE_BUCKET_SECONDS = 10
RATE_BUCKETS = 6


def rate_key(queue: str, what: str, bucket: int) -> str:
    """The counter of `what` (`enqueued` / `completed`) on `queue` in time bucket `bucket`."""
    return f"sy:rate:{{{queue}}}:{what}:{bucket}"


def count_rate(pipe: Any, queue: str, what: str, n: int = 1) -> None:
    """Queue on `pipe` the count of `n` messages enqueued to / jobs completed on `queue` now."""
    key = rate_key(queue, what, int(time.time()) // RATE_BUCKET_SECONDS)
    pipe.incrby(key, n)
    pipe.expire(key, RATE_BUCKET_SECONDS * (RATE_BUCKETS + 2))


def _write(pipe: Any, namespace: str, jobs: list[Outgoing], wakeup: bool, front: bool = False) -> None:
    """Queue on `pipe` what Dramatiq's `enqueue` command writes, one HSET + one RPUSH per queue for all `jobs`
    (LPUSH with `front`: ahead of everything waiting)."""
    by_queue: dict[str, dict[str, bytes]] = {}
    for job in jobs:
        job_id, queue = job[0], job[1]
        by_queue.setdefault(queue, {})[job_id] = job[2] if len(job) == 3 else job_message(job_id, queue)
    for queue, messages in by_queue.items():
        pipe.hset(f"{namespace}:{queue}.msgs", mapping=messages)
        if front:  # LPUSH puts its last argument first: the first job given stays first
            pipe.lpush(f"{namespace}:{queue}", *reversed(list(messages)))
        else:
            pipe.rpush(f"{namespace}:{queue}", *messages)
        count_rate(pipe, queue, "enqueued", len(messages))
        if wakeup:
            pipe.publish(wake_channel(namespace, queue), b"1")


async def send_jobs(redis: AsyncRedis, jobs: Iterable[Outgoing], *, wakeup: bool = True,
                    chunk: int = 5_000, namespace: str = NAMESPACE, front: bool = False) -> int:
    """Enqueue one message per (job id, queue) from async code, pipelined; returns how many were sent.

    Writes exactly what Dramatiq's `enqueue` command writes (the message under
    its id in `<queue>.msgs`, the id appended to the queue's list), but one
    HSET and one RPUSH per queue carry a whole chunk, and consumers are woken
    once per queue and chunk. The Redis message id is the job id, so the
    reconciler can tell a lost message from one still waiting (`unsent`).
    With `front`, the messages go ahead of everything waiting (the reconciler's
    re-sends: those jobs were accepted long ago).
    """
    sent = 0
    for part in _chunks(jobs, chunk):
        async with redis.pipeline(transaction=False) as pipe:
            _write(pipe, namespace, part, wakeup, front)
            await pipe.execute()
        sent += len(part)
    return sent


async def unsent(redis: AsyncRedis, jobs: list[tuple[str, str]], *,
                 namespace: str = NAMESPACE) -> list[tuple[str, str]]:
    """The (job id, queue) pairs whose message is not in Redis: lost, or never sent."""
    if not jobs:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for job_id, queue in jobs:
            pipe.hexists(f"{namespace}:{queue}.msgs", job_id)
        present = await pipe.execute()
    return [job for job, found in zip(jobs, present, strict=True) if not found]


async def withdraw(redis: AsyncRedis, jobs: list[tuple[str, str]], *, namespace: str = NAMESPACE) -> None:
    """Delete the messages of jobs that ended without running (a cancelled batch's lines).

    Their ids stay in the queue's list until a consumer reaches them, and the
    consumer's fetch (`fetch_live.lua`) passes over an id without a message
    in Redis, so a cancelled 100,000-line batch costs the bulk pool nothing.
    """
    by_queue: dict[str, list[str]] = {}
    for job_id, queue in jobs:
        by_queue.setdefault(queue, []).append(job_id)
    async with redis.pipeline(transaction=False) as pipe:
        for queue, ids in by_queue.items():
            for start in range(0, len(ids), 5_000):
                pipe.hdel(f"{namespace}:{queue}.msgs", *ids[start:start + 5_000])
        await pipe.execute()


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
        namespace=NAMESPACE,
        heartbeat_timeout=settings.heartbeat_timeout_ms,
        wakeup=settings.dispatch_wakeup,
        maintenance_chance=MAINTENANCE_SCALE if maintenance else DEFAULT_MAINTENANCE_CHANCE,
    )
