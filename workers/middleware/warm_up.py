"""Connect to PostgreSQL and Redis when a worker process boots, not on its first job; then tune the collector."""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import Middleware

from jobs.tuning import tune_gc
from workers.runtime import get_runtime, run_on_loop


class WarmUp(Middleware):
    """Build the process's runtime at boot, so the first job does not pay for connecting (dispatch latency)."""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        run_on_loop(get_runtime())
        tune_gc()  # what booting allocated is kept for the process's life
