"""Prometheus metrics of the API and the workers, defined once.

API processes expose them at `/metrics`. Worker processes run in
prometheus_client's multiprocess mode (`switchyard worker` sets
`PROMETHEUS_MULTIPROC_DIR` before anything imports prometheus_client) and
Dramatiq's exposition server serves the merged view on the worker metrics
port, next to Dramatiq's own `dramatiq_*` metrics.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from jobs.settings import prometheus_dir

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

HTTP_REQUESTS = Counter(
    "switchyard_http_requests_total", "HTTP requests by route, method and status.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "switchyard_http_request_duration_seconds", "HTTP request latency.", ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
WEBSOCKETS = Gauge(
    "switchyard_websocket_connections", "Open event streams (WebSocket and SSE).", ["endpoint"],
    multiprocess_mode="livesum",
)
JOBS_SUBMITTED = Counter("switchyard_jobs_submitted_total", "Jobs accepted by the API.", ["kind", "queue"])
JOBS = Counter("switchyard_jobs_total", "Jobs that reached a final state.", ["kind", "status"])
QUEUE_WAIT = Histogram(
    "switchyard_queue_wait_seconds", "Time from submission to the first claim.", ["queue"], buckets=_LATENCY_BUCKETS
)
QUEUE_DEPTH = Gauge(
    "switchyard_queue_depth", "Messages waiting in each queue (sampled at scrape and by maintenance).", ["queue"],
    multiprocess_mode="mostrecent",
)
PROVIDER_LATENCY = Histogram(
    "switchyard_provider_latency_seconds", "Provider call latency.", ["target", "outcome"], buckets=_LATENCY_BUCKETS
)
PROVIDER_TTFT = Histogram(
    "switchyard_provider_ttft_seconds", "Provider time to first token (streams).", ["target"],
    buckets=_LATENCY_BUCKETS,
)
ATTEMPTS = Counter("switchyard_provider_attempts_total", "Provider calls by outcome.", ["target", "outcome"])
RETRIES = Counter("switchyard_retries_total", "Retries of the same target.", ["target", "reason"])
FALLBACKS = Counter("switchyard_fallbacks_total", "Fallbacks to a route's next target.", ["model", "reason"])
CIRCUIT_OPENED = Counter("switchyard_circuit_opened_total", "Times a target's circuit opened.", ["target"])
TOKENS = Counter("switchyard_tokens_total", "Tokens used by completed jobs.", ["model", "direction"])
JOB_DURATION = Histogram(
    "switchyard_job_duration_seconds", "Time from a job's first start to its end.", ["kind", "status"],
    buckets=_LATENCY_BUCKETS,
)
DEAD_LETTERS = Counter("switchyard_dead_letters_total", "Messages Dramatiq gave up on.", ["queue"])
QUEUE_DEAD_LETTERS = Gauge(
    "switchyard_queue_dead_letters", "Dead-lettered messages of each queue (sampled at scrape).", ["queue"],
    multiprocess_mode="mostrecent",
)
QUEUE_OLDEST_READY = Gauge(
    "switchyard_queue_oldest_ready_seconds", "Age of the oldest message waiting (sampled at scrape).", ["queue"],
    multiprocess_mode="mostrecent",
)
CIRCUIT_STATE = Gauge(
    "switchyard_circuit_state", "A target's circuit: 0 closed, 1 half-open, 2 open (sampled at scrape).",
    ["target"], multiprocess_mode="mostrecent",
)
CREDITS = Counter(
    "switchyard_credits_total", "Credits moved, by operation (reserved, settled, released).", ["operation"]
)
BATCH_LINES = Counter("switchyard_batch_lines_total", "Batch lines that reached a final state.", ["status"])


def declare(*, queues: list[str], targets: list[str]) -> None:
    """Create the zero-valued series whose labels are known up front, so dashboards and alerts see 0, not nothing."""
    for queue in queues:
        DEAD_LETTERS.labels(queue=queue)
    for target in targets:
        CIRCUIT_OPENED.labels(target=target)
    for operation in ("reserved", "settled", "released"):
        CREDITS.labels(operation=operation)
    for status in ("succeeded", "failed", "cancelled"):
        BATCH_LINES.labels(status=status)
    for endpoint in ("ws_job", "ws_events", "sse_job"):
        WEBSOCKETS.labels(endpoint=endpoint)


def reap_dead_processes(directory: str | None = None) -> list[int]:
    """In multiprocess mode, drop the live-gauge files of processes that are gone (a crash leaves them).

    Counters and histograms of dead processes stay: Prometheus sums them, and
    removing them would make a counter go backwards. Returns the reaped pids.
    """
    from prometheus_client import multiprocess

    directory = directory or prometheus_dir()
    if not directory or not Path(directory).is_dir():
        return []
    pids = {int(m.group(1)) for f in Path(directory).glob("*.db") if (m := re.search(r"_(\d+)\.db$", f.name))}
    dead = []
    for pid in sorted(pids):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            # Siblings starting together reap the same files: whoever is second finds them gone.
            with contextlib.suppress(FileNotFoundError):
                multiprocess.mark_process_dead(pid, directory)
            dead.append(pid)
        except PermissionError:
            pass  # alive, someone else's
    return dead
