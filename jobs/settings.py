"""Typed settings, read once from the environment.

This is the only module that reads `os.environ`; everything else receives a
`Settings` (or the clients built from it) as an argument.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from jobs.states import Queue

#: The repository root: `schema.sql` and the default routes file live here.
ROOT = Path(__file__).resolve().parent.parent


#: The development default of `jwt_secret`; the API warns when it runs with it.
DEV_JWT_SECRET = "dev-only-insecure-jwt-secret-change-me"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every tunable of Switchyard; each field maps to one env var (see `ENV`)."""

    database_url: str = ""
    redis_url: str = ""
    data_dir: str = ".switchyard"
    routes_path: str = str(ROOT / "routes.toml")
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    # Providers. The simulator is a development tool; real providers need keys.
    simulator_url: str = "http://127.0.0.1:8900"
    openai_api_key: str = ""
    openai_base_url: str = ""
    anthropic_api_key: str = ""
    anthropic_base_url: str = ""
    ollama_host: str = "http://127.0.0.1:11434"

    # API limits.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    #: Proxies whose X-Forwarded-For / -Proto the API believes (comma-separated IPs or CIDRs, `*` for
    #: any): behind a TLS ingress, list it so client addresses (rate limits, lockout, audit) and the
    #: scheme (Secure cookies) are the real ones.
    forwarded_allow_ips: str = "127.0.0.1"
    #: The dashboard's session and CSRF cookies are always `Secure` (set it when users reach the
    #: API over HTTPS only; without it they are `Secure` when the request came over HTTPS).
    secure_cookies: bool = False
    max_body_bytes: int = 1_048_576
    #: How long an API request waits for a PostgreSQL connection before answering 503 (an outage
    #: is reported this fast; workers keep waiting longer: their retries are Dramatiq's).
    api_db_wait_seconds: float = 5.0
    #: Total characters of all messages of one request (schema caps each message and their count).
    max_prompt_chars: int = 400_000

    # Workers and queueing.
    #: Threads per worker process (sizes the worker's connection pool).
    worker_threads: int = 8
    #: Port of a worker pool's Prometheus exposition server.
    worker_metrics_port: int = 9191
    #: On SIGTERM a worker pool stops fetching and gives in-flight jobs this long to finish.
    shutdown_grace_seconds: float = 30.0
    #: Publish a wake-up on enqueue so idle consumers fetch at once (see jobs/broker.py).
    dispatch_wakeup: bool = True
    #: This worker pool's name in heartbeats and on the dashboard (`switchyard worker --pool` sets it;
    #: empty: the pool is named by its queues).
    pool: str = ""
    #: Dramatiq's notion of a dead worker (ms without a heartbeat); its messages are then requeued.
    heartbeat_timeout_ms: int = 10_000
    #: How long a running job may go without renewing its lease before it can be reclaimed.
    lease_seconds: float = 10.0
    #: A job claimed this many times without finishing is quarantined (it keeps killing workers).
    max_attempts: int = 5
    #: Dramatiq redeliveries of a job whose run raised an unexpected (infrastructure) error.
    delivery_retries: int = 3
    #: A dead-lettered job waits this long (still `queued`) for an operator's requeue before
    #: maintenance fails it `delivery_failed` and releases its credits (0: fail it at once).
    #: At most 6 days: Dramatiq drops dead letters after 7.
    dead_letter_hold_seconds: Annotated[float, msgspec.Meta(ge=0, le=6 * 86_400)] = 900.0
    #: Chaos testing only: a worker that claims a job whose input contains this text exits at once.
    chaos_crash_marker: str = ""
    #: Chaos testing only: ...or raises an unexpected error (as a database outage or a bug would).
    chaos_error_marker: str = ""

    # Provider calls.
    #: Every job must finish within this; retries and fallbacks included.
    job_deadline_seconds: float = 300.0
    #: Retries of the same target on transient errors, before falling back.
    retries_per_target: int = 2
    #: A Retry-After longer than this is not waited for: fall back instead.
    max_retry_after_seconds: float = 10.0
    #: Circuit breaker: this many transient failures within the window open the circuit...
    circuit_failure_threshold: int = 5
    circuit_window_seconds: float = 30.0
    #: ...for this long, then one probe decides.
    circuit_cooldown_seconds: float = 30.0
    #: Wait at most this long for a target's RPM/TPM budget, else fall back.
    rate_limit_max_wait_seconds: float = 2.0
    #: A job still `queued` this long after its last send is sent again.
    reconcile_after_seconds: float = 10.0
    #: How often the maintenance loop runs.
    maintenance_interval_seconds: float = 2.0

    # Accounts and auth.
    #: HMAC key of access tokens (JWT HS256). Set it in production; the default is for development only.
    jwt_secret: str = DEV_JWT_SECRET
    #: Rotation: access tokens signed with this former secret are still accepted (new ones are signed
    #: with `jwt_secret`); drop it once `access_token_ttl_seconds` has passed.
    jwt_previous_secret: str = ""
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 86_400
    #: Failed logins before an account / an IP address is locked out for `login_lockout_seconds`.
    login_max_failures_per_account: int = 5
    login_max_failures_per_ip: int = 20
    login_lockout_seconds: int = 900
    #: Requests per minute per API key (or token), by user tier.
    rate_limit_rpm_free: int = 120
    rate_limit_rpm_pro: int = 1200
    #: Jobs a user may have queued or running at once, by tier.
    max_concurrent_jobs_free: int = 20
    max_concurrent_jobs_pro: int = 200

    # Credits and billing.
    #: Credits every new user starts with (a free tier to try the platform at once).
    signup_grant_credits: int = 50_000
    #: Credits the `switchyard dev` admin starts with.
    dev_admin_credits: int = 1_000_000_000
    #: Credits per smallest currency unit paid (cent, paisa) when a payment does not say.
    credits_per_currency_unit: int = 100
    stripe_webhook_secret: str = ""
    razorpay_webhook_secret: str = ""
    #: Stripe signatures older than this are rejected (replay protection).
    stripe_tolerance_seconds: int = 300
    #: Jobs still queued or running this long after submission are expired and their credits released.
    job_expiry_seconds: int = 86_400

    # Files.
    #: Where uploaded and generated files live: empty for `<data_dir>/files` on local disk, or an
    #: object-store URL (`s3://bucket/prefix`, `memory://`) served through obstore.
    storage_url: str = ""
    #: S3-compatible storage: endpoint (MinIO, R2, ...), region and credentials (else the usual AWS chain).
    s3_endpoint: str = ""
    s3_region: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    #: The largest file one upload may be.
    max_file_bytes: int = 200 * 1024 * 1024
    #: Bytes of files one user may keep.
    file_quota_bytes: int = 2 * 1024 * 1024 * 1024

    # File processing and search (`file.process` jobs, vector stores, `/v1/search`).
    #: The embedding route that embeds file chunks and search queries (its vectors' size sets the index).
    knowledge_embedding_model: str = "sim-embed"
    #: Chunk size and overlap, in cl100k_base tokens (counted offline: `jobs/chunking.py`).
    chunk_tokens: int = 512
    chunk_overlap_tokens: int = 64
    #: Limits per processed file.
    max_file_pages: int = 2_000
    max_file_chunks: int = 10_000
    #: Texts per embedding call while processing a file, and calls in flight at once (one job).
    file_embed_batch: int = 256
    embed_concurrency: int = 4
    #: How long one file's processing may take (the `files` lane's deadline).
    file_process_deadline_seconds: float = 1_800.0
    #: Files one vector store may hold, and the longest search query.
    max_vector_store_files: int = 1_000
    max_query_chars: int = 4_000

    # Batches.
    #: The most lines one batch input file may have.
    max_batch_lines: int = 100_000
    #: Lines sent to the broker per pipelined round trip during a fan-out.
    batch_send_chunk: int = 5_000

    # Completion webhooks.
    #: Hosts (names, IPs or CIDRs, comma-separated) a callback may target even though they resolve to a
    #: private, loopback or link-local address. Empty: only public addresses.
    webhook_allow_hosts: str = ""
    #: Connect + read timeout of one delivery.
    webhook_timeout_seconds: float = 5.0
    #: Deliveries of one webhook before it fails; back-off doubles from `webhook_backoff_seconds`.
    webhook_max_attempts: int = 5
    webhook_backoff_seconds: float = 1.0
    #: Bytes of a receiver's response that are read (the rest is discarded).
    webhook_max_response_bytes: int = 65_536

    # Events.
    events_ttl_seconds: int = 86_400
    #: Subscribers poll the replay stream after this long without a live event.
    stream_idle_poll_seconds: float = 1.0

    def deadline_of(self, queue: str) -> float:
        """Seconds a job on `queue` may run: file processing has its own, longer deadline."""
        return self.file_process_deadline_seconds if queue == Queue.FILES else self.job_deadline_seconds


#: Settings field -> environment variable.
ENV: dict[str, str] = {
    "database_url": "DATABASE_URL",
    "redis_url": "REDIS_URL",
    "simulator_url": "SIMULATOR_URL",
    "openai_api_key": "OPENAI_API_KEY",
    "openai_base_url": "OPENAI_BASE_URL",
    "anthropic_api_key": "ANTHROPIC_API_KEY",
    "anthropic_base_url": "ANTHROPIC_BASE_URL",
    "ollama_host": "OLLAMA_HOST",
    "log_format": "LOG_FORMAT",
    "log_level": "LOG_LEVEL",
    "routes_path": "SWITCHYARD_ROUTES",
    "stripe_webhook_secret": "STRIPE_WEBHOOK_SECRET",
    "razorpay_webhook_secret": "RAZORPAY_WEBHOOK_SECRET",
}
for _name in Settings.__struct_fields__:
    ENV.setdefault(_name, "SWITCHYARD_" + _name.upper())


def settings_from(env: dict[str, str]) -> Settings:
    """Build settings from a mapping of environment variables (strings are coerced)."""
    raw: dict[str, Any] = {name: env[var] for name, var in ENV.items() if env.get(var, "") != ""}
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SystemExit(f"invalid configuration: {exc}") from None


@cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return settings_from(dict(os.environ))


#: prometheus_client's multiprocess directory: its own variable, read when it is imported.
PROMETHEUS_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"


def prometheus_dir() -> str | None:
    """This process's metrics directory in multiprocess mode (None: single-process metrics)."""
    return os.environ.get(PROMETHEUS_DIR_VAR) or None


def use_prometheus_dir(path: str) -> str:
    """Multiprocess metrics for this process and its children (before prometheus_client is imported).

    An operator's own directory wins; returns the one in use.
    """
    return os.environ.setdefault(PROMETHEUS_DIR_VAR, path)
