"""Run the reliability scenarios and write their figures for docs/reliability.md.

    .venv/bin/python -m scripts.chaos                      # every scenario, full size
    .venv/bin/python -m scripts.chaos --scenario kill-workers --scenario redis-memory
    .venv/bin/python -m scripts.chaos --quick              # the CI sizes (tests/reliability/test_chaos.py)

Each scenario starts its own embedded stack on loopback, breaks it under load,
prints its figures and ends with the oracle (scripts/chaos/oracle.py). The
summary goes to `--out` (default docs/reliability/) as `chaos.json` and
`chaos.md`; the exit status is 1 when a scenario broke a promise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scripts.chaos.scenarios import FULL, QUICK, SCENARIOS

ROOT = Path(__file__).resolve().parents[2]


def _markdown(results: dict[str, Any], quick: bool) -> str:
    lines = [f"# Chaos run, {results['_run']['at']} ({'quick' if quick else 'full'} sizes)", "",
             f"{results['_run']['machine']}", ""]
    for name, figures in results.items():
        if name.startswith("_"):
            continue
        lines += [f"## {name}", ""]
        if "error" in figures:
            lines += ["**FAILED**", "", "```", figures["error"], "```", ""]
            continue
        lines += ["| figure | value |", "|---|---|"]
        for key, value in figures.items():
            if key != "oracle":
                lines.append(f"| {key} | `{json.dumps(value)}` |")
        oracle = figures.get("oracle", {})
        lines += ["", "Oracle: " + ", ".join(f"{k} {json.dumps(v)}" for k, v in oracle.items()), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the chosen scenarios, print and write their figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                        help="run only this scenario (repeatable); default: all")
    parser.add_argument("--quick", action="store_true", help="the small CI sizes")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability",
                        help="directory of chaos.json and chaos.md")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    names = args.scenario or list(SCENARIOS)
    results: dict[str, Any] = {"_run": {"at": datetime.now(UTC).isoformat(timespec="seconds"),
                                        "machine": f"{platform.machine()}, {platform.system()}, "
                                                   f"Python {platform.python_version()}",
                                        "quick": args.quick}}
    failed = False
    for name in names:
        print(f"== {name} ({sizes[name]})", flush=True)
        started = time.monotonic()
        try:
            figures = asyncio.run(SCENARIOS[name](sizes[name]))
        except Exception as exc:
            failed = True
            figures = {"error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        figures["wall_s"] = round(time.monotonic() - started, 1)
        results[name] = figures
        print(json.dumps(figures, indent=2), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chaos.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "chaos.md").write_text(_markdown(results, args.quick))
    print(f"summary: {args.out / 'chaos.json'}, {args.out / 'chaos.md'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
