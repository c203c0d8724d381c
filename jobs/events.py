"""Per-job event log: publish (workers, API) and replay (API).

Each event is `{seq, type, job_id, at, data}` with `seq` counting 1, 2, 3…
per job. One Lua script assigns the sequence number, appends the event to the
job's replay stream (a Redis stream whose entry ids are `0-<seq>`, so a
replay after `seq` is one exclusive XRANGE) and publishes it on the job's and
the owner's pub/sub channels — atomically, so the stream and the live channel
can never disagree on order.

Subscribers (api/streaming.py) subscribe first, replay second, then go live,
dropping anything at or below the last sequence they delivered and filling
any gap from the replay stream.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from redis.asyncio import Redis

from jobs.states import TERMINAL_EVENTS, EventType

_PUBLISH = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[1])
local payload = '{"seq":' .. seq .. ',' .. ARGV[1]
redis.call('XADD', KEYS[2], '0-' .. seq, 'e', payload)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
for i = 3, #ARGV do
  redis.call('PUBLISH', ARGV[i], payload)
end
return seq
"""


#: A terminal event is published once: the first publisher sets the job's `ended` key (KEYS[3]); any later
#: one (the outbox sweep racing a slow worker) publishes nothing and gets 0 — as does every event after it
#: (`_PUBLISH`'s first line: a worker still streaming a job that was cancelled or expired meanwhile).
_PUBLISH_END = """
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[2]) then return 0 end
""" + _PUBLISH.replace("if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end\n", "", 1)

#: The outbox of terminal events: job ids scored by when their ending began, removed once announced.
ENDING_KEY = "sy:ending"


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a job's event log, as clients receive it."""

    seq: int
    type: str
    job_id: str
    at: str
    data: dict[str, Any] = {}


class _Unsequenced(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    job_id: str
    at: str
    data: dict[str, Any]


#: Job ids published here are cancelled on whichever worker runs them (workers/cancel_watcher.py).
CANCEL_CHANNEL = "sy:cancel"

_encoder = msgspec.json.Encoder()
event_decoder = msgspec.json.Decoder(Event)


def job_channel(job_id: UUID | str) -> str:
    """Pub/sub channel of one job's events."""
    return f"sy:job:{job_id}"


def user_channel(owner_id: UUID | str) -> str:
    """Pub/sub channel of all the events of one owner's jobs."""
    return f"sy:user:{owner_id}"


def _keys(job_id: UUID | str) -> list[str]:
    # Hash tag: every key of a job lives in the same cluster slot.
    return [f"sy:{{{job_id}}}:seq", f"sy:{{{job_id}}}:events", f"sy:{{{job_id}}}:ended"]


def now_iso() -> str:
    """The current UTC time, ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class EventLog:
    """Publishes and replays job events on one Redis client."""

    def __init__(self, redis: Redis, ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl_seconds = ttl_seconds
        self._publish = redis.register_script(_PUBLISH)
        self._publish_end = redis.register_script(_PUBLISH_END)

    async def publish(
        self, job_id: UUID | str, owner_id: UUID, type: EventType, data: dict[str, Any] | None = None
    ) -> int:
        """Append an event to the job's (or batch's) log and publish it; returns its sequence number.

        A job's terminal event is published at most once (0 for a repeat) and
        takes the job out of the outbox (`ending`).
        """
        body = _encoder.encode(
            _Unsequenced(type=str(type), job_id=str(job_id), at=now_iso(), data=data or {})
        )
        args: list[bytes | str | int] = [body[1:], self.ttl_seconds, job_channel(job_id), user_channel(owner_id)]
        if type not in TERMINAL_EVENTS:
            return int(await self._publish(keys=_keys(job_id), args=args))
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._publish_end(keys=_keys(job_id), args=args, client=pipe)
            pipe.zrem(ENDING_KEY, str(job_id))
            seq, _ = await pipe.execute()
        return int(seq)

    async def ending(self, job_id: UUID | str) -> None:
        """Before the commit that ends a job: put it in the outbox of terminal events.

        If the process dies between that commit and `publish`, the maintenance
        loop finds the job here and announces its end (`announce_missed_ends`).
        """
        await self.redis.zadd(ENDING_KEY, {str(job_id): time.time()})

    async def unannounced(self, older_than: float, limit: int = 500) -> list[str]:
        """Jobs in the outbox since more than `older_than` seconds ago."""
        ids = await self.redis.zrangebyscore(ENDING_KEY, 0, time.time() - older_than, start=0, num=limit)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def check_later(self, job_ids: list[str]) -> None:
        """Keep jobs in the outbox, to be looked at again after the grace period (not finished yet)."""
        if job_ids:
            await self.redis.zadd(ENDING_KEY, dict.fromkeys(job_ids, time.time()))

    async def forget(self, job_ids: list[str]) -> None:
        """Take jobs out of the outbox (nothing to announce)."""
        if job_ids:
            await self.redis.zrem(ENDING_KEY, *job_ids)

    async def publish_many(self, events: list[tuple[UUID | str, UUID, EventType, dict[str, Any] | None]]) -> None:
        """`publish` for many jobs' events (job id, owner, type, data) in one pipeline."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, owner_id, type, data in events:
                body = _encoder.encode(_Unsequenced(type=str(type), job_id=str(job_id), at=now_iso(), data=data or {}))
                await self._publish(keys=_keys(job_id), client=pipe,
                                    args=[body[1:], self.ttl_seconds, job_channel(job_id), user_channel(owner_id)])
            await pipe.execute()

    async def replay(self, job_id: UUID | str, after: int = 0, upto: int | None = None) -> list[Event]:
        """Events with `after < seq (<= upto)`, in order, from the replay stream."""
        end = "+" if upto is None else f"0-{upto}"
        entries = await self.redis.xrange(_keys(job_id)[1], min=f"(0-{after}", max=end)
        return [event_decoder.decode(fields[b"e"]) for _id, fields in entries or [] if fields]
