"""CLI: ``python -m scripts.simulator --host 127.0.0.1 --port 8900 [--ttft-ms N] [--tps N]``.

Prints one line containing the base URL once the server is accepting connections.
Defaults for timing come from ``SIM_TTFT_MS`` / ``SIM_TOKENS_PER_S`` when set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

import uvicorn

from .app import base_url, bind_socket, create_app, uvicorn_config


def _env_float(name: str) -> float:
    """Read a float environment variable, defaulting to 0 when unset or empty."""
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else 0.0
    except ValueError:
        sys.exit(f"{name} must be a number, got {raw!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse command-line flags (env vars supply the timing defaults)."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.simulator",
        description="Switchyard provider simulator (DEVELOPMENT/TEST TOOL, not a provider).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port")
    parser.add_argument(
        "--ttft-ms",
        type=float,
        default=_env_float("SIM_TTFT_MS"),
        help="default time to first token in ms (env SIM_TTFT_MS)",
    )
    parser.add_argument(
        "--tps",
        type=float,
        default=_env_float("SIM_TOKENS_PER_S"),
        help="default tokens/second, 0 = unlimited (env SIM_TOKENS_PER_S)",
    )
    parser.add_argument("--access-log", action="store_true", help="enable uvicorn access log")
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


async def _serve(server: uvicorn.Server, url: str, sock: socket.socket) -> None:
    """Run uvicorn and announce the URL once it is actually accepting connections."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        print(f"switchyard provider simulator ready at {url}", flush=True)
    await task


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    sock = bind_socket(args.host, args.port)
    app = create_app(ttft_ms=args.ttft_ms, tokens_per_s=args.tps)
    config = uvicorn_config(app, args.host, args.port, args.access_log, args.log_level)
    server = uvicorn.Server(config)
    try:
        asyncio.run(_serve(server, base_url(sock), sock))
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
