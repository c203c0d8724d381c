"""Assemble the simulator's Litestar app and run it under uvicorn (in a thread or not)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from litestar import Litestar
from litestar.datastructures import State

from . import anthropic_api, control, ollama_api, openai_api
from .faults import SimState

# Short so a test-suite teardown never waits long on a hung (fault=hang) request.
GRACEFUL_SHUTDOWN_S = 1


def create_app(ttft_ms: float = 0, tokens_per_s: float = 0) -> Litestar:
    """Build the simulator app; ``ttft_ms``/``tokens_per_s`` are defaults (0 = instant)."""
    return Litestar(
        route_handlers=[openai_api.router, anthropic_api.router, ollama_api.router, control.router],
        state=State({"sim": SimState(ttft_ms=ttft_ms, tokens_per_s=tokens_per_s)}),
        openapi_config=None,  # no /schema routes: this is a wire-protocol fake, not an API
        logging_config=None,  # leave global logging to uvicorn / the host process
    )


def uvicorn_config(
    app: Litestar,
    host: str,
    port: int,
    access_log: bool = False,
    log_level: str = "warning",
    own_logging: bool = True,
) -> uvicorn.Config:
    """uvicorn settings shared by the CLI and :func:`serve_in_thread` (access log off).

    ``own_logging=False`` keeps uvicorn from reconfiguring the host process's logging
    (its records then propagate to the root logger, e.g. into pytest's capture).
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=access_log,
        log_level=log_level,
        log_config=uvicorn.config.LOGGING_CONFIG if own_logging else None,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    if access_log:
        # Access lines are INFO; don't let a quieter --log-level swallow what was asked for.
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    return config


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind (but don't listen on) a TCP socket; port 0 picks a free port race-free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def base_url(sock: socket.socket) -> str:
    """``http://host:port`` for a bound socket (IPv6 hosts bracketed)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def serve_in_thread(
    host: str = "127.0.0.1", port: int = 0, access_log: bool = False, **config: Any
) -> Iterator[str]:
    """Run the simulator in a daemon thread; yield its base URL (no ``/v1``) until exit.

    ``config`` is passed to :func:`create_app` (``ttft_ms``, ``tokens_per_s``).
    """
    sock = bind_socket(host, port)
    app = create_app(**config)
    server = uvicorn.Server(uvicorn_config(app, host, port, access_log, own_logging=False))
    # uvicorn only installs signal handlers on the main thread, so this is thread-safe.
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="switchyard-simulator", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("provider simulator failed to start")
            time.sleep(0.01)
        yield base_url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=GRACEFUL_SHUTDOWN_S + 5)
        sock.close()
