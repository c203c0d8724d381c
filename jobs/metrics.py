"""Prometheus metrics of the API and the workers, defined once.

API processes expose them at `/metrics`. Worker processes run in
prometheus_client's multiprocess mode (`switchyard worker` sets
`PROMETHEUS_MULTIPROC_DIR` before anything imports prometheus_client) and
Dramatiq's exposition server serves the merged view on the worker metrics
port, next to Dramatiq's own `dramatiq_*` metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    "switchyard_queue_depth", "Messages waiting in each queue (sampled by maintenance).", ["queue"],
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
