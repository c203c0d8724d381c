"""Typed settings, read once from the environment.

This is the only module that reads `os.environ`; everything else receives a
`Settings` (or the clients built from it) as an argument.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any, Literal

import msgspec

#: The repository root: `schema.sql` and the default routes file live here.
ROOT = Path(__file__).resolve().parent.parent


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
    max_body_bytes: int = 1_048_576
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
    #: Dramatiq's notion of a dead worker (ms without a heartbeat); its messages are then requeued.
    heartbeat_timeout_ms: int = 10_000
    #: How long a running job may go without renewing its lease before it can be reclaimed.
    lease_seconds: float = 10.0
    #: A job claimed this many times without finishing is quarantined (it keeps killing workers).
    max_attempts: int = 5
    #: Chaos testing only: a worker that claims a job whose payload contains this text exits at once.
    chaos_crash_marker: str = ""

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

    # Events.
    events_ttl_seconds: int = 86_400
    #: Subscribers poll the replay stream after this long without a live event.
    stream_idle_poll_seconds: float = 1.0


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
