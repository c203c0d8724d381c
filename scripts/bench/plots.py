"""The plots of `python -m scripts.bench`: PNGs in docs/images/, drawn from the benchmarks' JSON figures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the headless backend


def _enqueue(figures: dict[str, Any], path: Path) -> None:
    summary = figures["summary"]
    names = [("redis_py_lpush", "redis-py LPUSH"), ("dramatiq_send", "raw Dramatiq send"),
             ("ours_sequential", "Switchyard, 1 client"), ("ours_one_user_c50", "Switchyard, 50 clients, 1 user"),
             ("ours_many_users_c50", "Switchyard, 50 clients, 50 users")]
    names = [(k, label) for k, label in names if k in summary]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    rates = [summary[k]["rate"] for k, _ in names]
    ax.barh([label for _, label in names], rates, color=["#999", "#999", "#4a7", "#4a7", "#4a7"][:len(names)])
    ax.axvline(3000, color="#c33", linestyle="--", linewidth=1, label="target 3,000/s")
    ax.set_xlabel("accepted per second")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    for y, rate in enumerate(rates):
        ax.text(rate, y, f" {rate:,.0f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _gateway(figures: dict[str, Any], path: Path) -> None:
    """Added latency (p50) vs concurrency, LiteLLM vs Switchyard, streaming and not."""
    curves = figures.get("curves") or {}
    if not curves:
        raise KeyError("curves")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=False)
    for ax, mode in zip(axes, ("non-streaming", "streaming"), strict=True):
        for target, points in curves.get(mode, {}).items():
            xs = [p["concurrency"] for p in points]
            ax.plot(xs, [p["p50_ms"] for p in points], marker="o", label=f"{target} p50")
            ax.plot(xs, [p["p99_ms"] for p in points], marker="x", linestyle=":", label=f"{target} p99")
        ax.set_title(mode)
        ax.set_xscale("log")
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("latency ms")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PLOTS: dict[str, tuple[str, Callable[[dict[str, Any], Path], None]]] = {
    "enqueue": ("bench-enqueue.png", _enqueue),
    "gateway": ("bench-gateway-latency.png", _gateway),
}


def draw(figures: dict[str, dict[str, Any]], images: Path) -> list[str]:
    """Every plot whose benchmark ran; the file names written."""
    images.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (file, plot) in PLOTS.items():
        if name in figures:
            try:
                plot(figures[name], images / file)
            except KeyError:
                continue  # that run did not produce the figures this plot needs
            written.append(file)
    return written
