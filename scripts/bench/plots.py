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
    """Latency (p50, p99) and rate vs concurrency: direct, LiteLLM, Switchyard; streaming and not."""
    rows = figures["summary"]["rows"]
    modes = sorted({r["mode"] for r in rows})
    fig, axes = plt.subplots(2, len(modes), figsize=(4.6 * len(modes), 6.4), squeeze=False)
    for col, mode in enumerate(modes):
        for target, color in (("direct", "#999"), ("litellm", "#c63"), ("switchyard", "#4a7")):
            points = sorted((r for r in rows if r["mode"] == mode and r["target"] == target),
                            key=lambda r: r["concurrency"])
            xs = [r["concurrency"] for r in points]
            axes[0][col].plot(xs, [r["p50_ms"] for r in points], marker="o", color=color, label=f"{target} p50")
            axes[0][col].plot(xs, [r["p99_ms"] for r in points], marker="x", linestyle=":", color=color,
                              label=f"{target} p99")
            if target != "direct":  # tens of times the others: it would flatten them
                axes[1][col].plot(xs, [r["rps"] for r in points], marker="o", color=color, label=target)
        axes[0][col].set_title(f"{mode}: latency")
        axes[0][col].set_yscale("log")
        axes[0][col].set_ylabel("ms")
        axes[1][col].set_title(f"{mode}: completed per second")
        axes[1][col].set_ylabel("requests/s")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log")
            ax.set_xlabel("concurrent clients")
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
