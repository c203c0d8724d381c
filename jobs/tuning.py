"""Interpreter tuning of the long-running processes (API, workers)."""

from __future__ import annotations

import gc

#: The young generation's collection threshold (CPython: 700). A process holding thousands of sockets
#: or streams allocates fast and keeps what it allocates, so at 700 it collects every few hundred
#: frames and each collection walks survivors that are going nowhere. Measured with
#: `scripts/bench/fanout.py`: the API's CPU per delivered WebSocket frame 31 → 20 µs.
GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Freeze what start-up allocated (imports, settings: never garbage) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, 20, 20)
