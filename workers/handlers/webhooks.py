"""The `webhook.deliver` job: POST one signed event to its callback URL until the receiver accepts it.

    secret ─► for each delivery: body + signature (fresh timestamp, same webhook-id)
           ─► resolve + check the URL ─► POST ─► 2xx: done | else back off and deliver again

Every delivery is one attempt of the job (provider `webhook`, model = the URL's
host), so `GET /v1/jobs/{id}` shows them. A URL the SSRF guard refuses fails
the job at once (`webhook_target_refused`): it is re-checked on every delivery,
because DNS may have changed since the job was submitted. After
`webhook_max_attempts` deliveries without a 2xx the job fails with
`webhook_delivery_failed`.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from loguru import logger

from jobs import store, webhooks
from jobs.errors import WebhookDeliveryFailed, WebhookTargetRefused
from jobs.kinds import WebhookInput, WebhookResult
from jobs.settings import Settings
from jobs.states import EventType
from workers.handlers.base import Outcome
from workers.runtime import Runtime

#: The longest pause between two deliveries, however many failed before.
MAX_BACKOFF_SECONDS = 60.0


def backoff(settings: Settings, failed: int) -> float:
    """Seconds to wait after `failed` failed deliveries: doubling from the setting, capped, jittered."""
    ceiling = min(MAX_BACKOFF_SECONDS, settings.webhook_backoff_seconds * 2 ** (failed - 1))
    # Half fixed, half random: receivers recovering from an outage are not hit by every job at once.
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _attempt(job: store.JobRow, host: str, started_at: datetime, t0: float, outcome: str = "ok",
             code: str | None = None, message: str | None = None) -> store.AttemptRow:
    """One delivery as an attempt of the job."""
    return store.AttemptRow(
        attempt=job.attempts, provider="webhook", model=host, started_at=started_at,
        latency_ms=(time.perf_counter() - t0) * 1000, ttft_ms=None, outcome=outcome,
        error_code=code, error_message=message[:500] if message else None, usage=None,
    )


@dataclass(frozen=True)
class _Delivery:
    """How one delivery went: the receiver's status, or why there was none worth accepting."""

    status: int | None = None
    #: A short reason for the `retrying` event (`http_500`, `timeout`, `connection`, `dns`).
    reason: str = ""
    message: str = ""

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def _deliver_once(rt: Runtime, job: store.JobRow, input: WebhookInput, host: str,
                        attempts: list[store.AttemptRow]) -> _Delivery:
    """Sign the event afresh and POST it once, recording the delivery as an attempt."""
    # Looked up per delivery: once a user rotates their secret, no retry is signed with the old one.
    async with rt.pool.connection() as conn:
        secret = await webhooks.secret_for(conn, job.owner_id)
    now = datetime.now(UTC)
    body = webhooks.payload(input.type, now, input.data)
    headers = webhooks.sign(secret, input.webhook_id, now, body)
    t0 = time.perf_counter()
    try:
        status = await webhooks.deliver(input.url, headers, body, rt.settings)
    except WebhookTargetRefused as exc:
        attempts.append(_attempt(job, host, now, t0, "error", exc.code, exc.message))
        raise
    except asyncio.CancelledError:
        attempts.append(_attempt(job, host, now, t0, "cancelled", "cancelled"))
        raise
    except WebhookDeliveryFailed as exc:
        delivery = _Delivery(reason=str(exc.extra.get("reason", "connection")), message=exc.message)
    else:
        redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
        delivery = _Delivery(status=status, reason=f"http_{status}", message=f"{host} answered HTTP {status}{redirect}")
    if delivery.accepted:
        attempts.append(_attempt(job, host, now, t0))
    else:
        attempts.append(_attempt(job, host, now, t0, "error", WebhookDeliveryFailed.code, delivery.message))
    return delivery


async def run(rt: Runtime, job: store.JobRow, input: WebhookInput,
              attempts: list[store.AttemptRow]) -> Outcome:
    """Deliver the event, retrying with back-off; the receiver's status and the number of deliveries."""
    settings, host = rt.settings, webhooks.host_of(input.url)
    deadline = time.monotonic() + settings.job_deadline_seconds
    deliveries = 0
    while True:
        deliveries += 1
        delivery = await _deliver_once(rt, job, input, host, attempts)
        if delivery.accepted:
            assert delivery.status is not None
            return Outcome(WebhookResult(status_code=delivery.status, deliveries=deliveries))
        wait = backoff(settings, deliveries)
        if deliveries >= settings.webhook_max_attempts or time.monotonic() + wait > deadline:
            raise WebhookDeliveryFailed(
                f"{host} did not accept the webhook in {deliveries} deliveries; last: {delivery.message}",
                deliveries=deliveries)
        logger.warning("webhook delivery {} to {} failed ({}); again in {:.2f}s", deliveries, host,
                       delivery.reason, wait)
        await rt.events.publish(job.id, job.owner_id, EventType.RETRYING, {
            "target": host, "attempt": deliveries + 1, "reason": delivery.reason, "wait_seconds": round(wait, 3)})
        await asyncio.sleep(wait)
