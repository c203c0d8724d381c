"""Run the benchmark set and write its figures into docs/benchmarks.md.

    .venv/bin/python -m scripts.bench [--quick] [--only NAME ...] [--skip NAME ...] [--no-write]

1. Setup, while the package registries are reachable: Debian's `redis-tools` (for `redis-benchmark`) and
   the LiteLLM proxy in its own venv (`.bench/litellm-venv`, `scripts/bench/gateway.py --setup`).
2. Then everything runs inside a new network namespace with only loopback up (`unshare -n`): no benchmark
   traffic can leave 127.0.0.1, and a peer that tries to reach the internet fails at once instead.
3. Each benchmark runs as its own process, one after the other (the machine has 2 cores: nothing else
   may run beside a benchmark), writes its figures as JSON (`docs/bench/<name>.json`) and prints its
   tables as markdown (`docs/bench/<name>.md`).
4. The section between the `bench:begin` / `bench:end` markers of docs/benchmarks.md is rewritten: every
   target with its figure and MET / MISSED, each benchmark's tables, and plots in docs/images/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scripts.procs import ROOT

OUT = ROOT / "docs" / "bench"
IMAGES = ROOT / "docs" / "images"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
#: Set inside the network namespace, so the runner does not enter another.
INSIDE = "SWITCHYARD_BENCH_NETNS"


@dataclass(frozen=True)
class Bench:
    """One benchmark module and its arguments (full run, `--quick` run)."""

    name: str
    title: str
    args: list[str] = field(default_factory=list)
    quick: list[str] = field(default_factory=list)


BENCHES = [
    Bench("enqueue", "Enqueue: `POST /v1/jobs` vs raw Dramatiq `send()` vs Redis LPUSH",
          ["--rounds", "3", "--jobs", "3000"], ["--rounds", "1", "--jobs", "1000"]),
    Bench("dispatch", "Dispatch latency: enqueue → `started`, idle and under load",
          ["--jobs", "40", "--gap", "0.6", "--load-rate", "200", "--load-seconds", "15"],
          ["--jobs", "10", "--gap", "0.3", "--load-rate", "100", "--load-seconds", "5"]),
    Bench("gateway", "Gateway overhead and first-token overhead vs the LiteLLM proxy", [], ["--quick"]),
    Bench("streams", "Worker concurrency: streaming jobs in one worker process",
          ["--designs", "asyncio", "platform", "--rounds", "3"], ["--quick", "--designs", "asyncio", "platform"]),
    Bench("fanout", "Fan-out: WebSocket clients on one API process", [], ["--quick"]),
    Bench("batch", "Batch fan-out: a JSONL file → jobs enqueued", ["--rounds", "3", "--no-drain"],
          ["--rounds", "1", "--lines", "20000", "--no-drain"]),
]


def setup() -> None:
    """What needs the registries: redis-benchmark and LiteLLM's venv (both skipped when present)."""
    if not shutil.which("redis-benchmark") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-tools"], check=False,
                       stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "scripts.bench.gateway", "--setup"], cwd=ROOT, check=True)


def in_loopback_namespace(argv: list[str]) -> None:
    """Re-run this command in a new network namespace with only loopback up; returns only if already in one."""
    if os.environ.get(INSIDE) or not shutil.which("unshare"):
        return
    script = 'ip link set lo up && exec "$@"'
    cmd = ["unshare", "-n", "sh", "-c", script, "sh", sys.executable, "-m", "scripts.bench", *argv]
    sys.exit(subprocess.run(cmd, env={**os.environ, INSIDE: "1"}, cwd=ROOT).returncode)


def run(bench: Bench, quick: bool) -> dict[str, Any]:
    """One benchmark: its JSON figures, its markdown output and how long it took."""
    OUT.mkdir(parents=True, exist_ok=True)
    result = OUT / f"{bench.name}.json"
    result.unlink(missing_ok=True)
    args = [sys.executable, "-m", f"scripts.bench.{bench.name}", *(bench.quick if quick else bench.args),
            "--json", str(result)]
    print(f"\n=== {bench.name}: {' '.join(args[1:])}", file=sys.stderr)
    started = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    elapsed = time.monotonic() - started
    sys.stderr.write(proc.stdout)
    (OUT / f"{bench.name}.md").write_text(proc.stdout)
    figures = json.loads(result.read_text()) if result.exists() else {}
    return {"bench": bench, "ok": proc.returncode == 0 and bool(figures), "figures": figures,
            "output": proc.stdout, "seconds": elapsed, "command": " ".join(["python", *args[1:-2]])}


def _ran_at() -> datetime:
    """When the newest stored figures were written."""
    stamps = [p.stat().st_mtime for p in OUT.glob("*.json")]
    return datetime.fromtimestamp(max(stamps), UTC) if stamps else datetime.now(UTC)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def _label(target: dict[str, Any]) -> str:
    return str(target.get("label") or target["name"])


def _figure(target: dict[str, Any]) -> str:
    """A target's figure: given, or ours vs the peer's with the ratio (scripts/bench/gateway.py)."""
    if "figure" in target:
        return str(target["figure"])
    if target.get("ratio") is None:
        return "—"
    return f"{target['ours']:.2f} vs LiteLLM {target['litellm']:.2f} ({target['ratio']:.2f}×)"


def _as_markdown(output: str) -> str:
    """A benchmark's printed output under this page's headings: its own headings demoted, plain text fenced."""
    text = output.strip()
    if not any(line.startswith("|") for line in text.splitlines()):
        return f"```text\n{text}\n```"
    return "\n".join("##" + line if line.startswith("## ") else line for line in text.splitlines())


def render(runs: list[dict[str, Any]], quick: bool, plots: list[str]) -> str:
    """The generated section of docs/benchmarks.md."""
    lines = [BEGIN, "", "## Against the peers: every target of the benchmark set", "",
             f"Generated by `.venv/bin/python -m scripts.bench{' --quick' if quick else ''}`, figures of "
             f"{_ran_at():%Y-%m-%d %H:%M} UTC — {machine()}; inside a network namespace with only "
             "loopback up; each figure against a baseline measured in the same run.", "",
             "| benchmark | target | figure | |", "|---|---|---|---|"]
    for r in runs:
        for t in r["figures"].get("targets", []):
            lines.append(f"| {r['bench'].name} | {_label(t)} | {_figure(t)} | {'MET' if t['met'] else 'MISSED'} |")
        if not r["ok"]:
            lines.append(f"| {r['bench'].name} | (run failed: see `docs/bench/{r['bench'].name}.md`) | | FAILED |")
    lines.append("")
    lines += [f"![{p}](images/{p})" for p in plots] + [""]
    for r in runs:
        took = f"({r['seconds']:.0f} s)" if r["seconds"] else ""
        lines += [f"### {r['bench'].title}", "", "```bash", f".venv/bin/{r['command']}", "```", "",
                  took, "", _as_markdown(r["output"]), ""]
    lines.append(END)
    return "\n".join(lines)


def write_doc(section: str) -> None:
    text = DOC.read_text()
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        first, _, rest = text.partition("\n## ")
        text = f"{first}{section}\n\n## {rest}"
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test of the set)")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES], default=[])
    parser.add_argument("--skip", nargs="+", choices=[b.name for b in BENCHES], default=[])
    parser.add_argument("--no-write", action="store_true", help="leave docs/benchmarks.md as it is")
    parser.add_argument("--render", action="store_true",
                        help="run nothing: rewrite docs/benchmarks.md from the last figures in docs/bench/")
    args = parser.parse_args()
    if args.render:
        args.only = [b.name for b in BENCHES if (OUT / f"{b.name}.json").exists()]
    if not os.environ.get(INSIDE) and not args.render:
        setup()
        in_loopback_namespace(sys.argv[1:])
    chosen = [b for b in BENCHES if (not args.only or b.name in args.only) and b.name not in args.skip]
    runs = [] if args.render else [run(b, args.quick) for b in chosen]
    if args.only:  # a partial run keeps the other benchmarks' last figures
        names = {r["bench"].name for r in runs}
        for b in BENCHES:
            if b.name not in names and (OUT / f"{b.name}.json").exists():
                runs.append({"bench": b, "ok": True, "figures": json.loads((OUT / f"{b.name}.json").read_text()),
                             "output": (OUT / f"{b.name}.md").read_text(), "seconds": 0.0,
                             "command": f"python -m scripts.bench.{b.name} {' '.join(b.args)}"})
        runs.sort(key=lambda r: [b.name for b in BENCHES].index(r["bench"].name))
    from scripts.bench.plots import draw

    plots = draw({r["bench"].name: r["figures"] for r in runs if r["ok"]}, IMAGES)
    if not args.no_write:
        write_doc(render(runs, args.quick, plots))
        print(f"\nwrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    failed = [r["bench"].name for r in runs if not r["ok"]]
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
