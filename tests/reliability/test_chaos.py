"""The reliability suite's fast subset: every chaos scenario at its quick size, each judged by the oracle.

The scenarios live in `scripts/chaos/scenarios.py` (the full sizes run with
`python -m scripts.chaos`); each starts a stack of its own, so these tests
need none of the session's processes. A scenario raises AssertionError when
the oracle (`scripts/chaos/oracle.py`) or its own checks find a broken promise.
"""

from __future__ import annotations

from scripts.chaos.scenarios import (
    QUICK,
    kill_workers,
    postgres_restart,
    provider_faults,
    redis_restart,
    ws_reconnects,
)


async def test_sigkilled_worker_pools_lose_and_double_settle_nothing() -> None:
    figures = await kill_workers(QUICK["kill-workers"])
    print(f"\nkill-workers: {figures}")
    assert figures["kills"] == 2
    assert figures["oracle"]["reclaimed"] > 0  # the kills did strike running jobs


async def test_redis_killed_and_restarted_from_its_aof_loses_no_accepted_job() -> None:
    figures = await redis_restart(QUICK["redis-aof"], aof=True)
    print(f"\nredis-aof: {figures}")


async def test_memory_only_redis_restart_loses_no_accepted_job() -> None:
    figures = await redis_restart(QUICK["redis-memory"], aof=False)
    print(f"\nredis-memory: {figures}")
    assert figures["resent_by_reconciler"] > 0  # the restart did lose queued messages


async def test_postgres_restart_answers_503_then_recovers_by_itself() -> None:
    figures = await postgres_restart(QUICK["postgres-restart"])
    print(f"\npostgres-restart: {figures}")
    assert figures["probe_503_latency_s"]["max"] < 10  # an outage is reported, not waited out


async def test_provider_faults_end_by_retry_or_fallback_charged_once() -> None:
    figures = await provider_faults(QUICK["provider-faults"])
    print(f"\nprovider-faults: {figures}")
    assert figures["served_by_chaos-secondary"] > 0  # persistent faults did fall back


async def test_ws_clients_resuming_with_after_see_every_event_once() -> None:
    figures = await ws_reconnects(QUICK["ws-reconnects"])
    print(f"\nws-reconnects: {figures}")
    assert figures["reconnects"] >= 100
