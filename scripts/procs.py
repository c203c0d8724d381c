"""Child processes of tests and benchmarks: the API, worker pools and the maintenance loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from scripts.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


class Process:
    """A child process of the test session, with its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.env_port: int | None = None
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, not a shutdown)."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, grace: float = 15) -> None:
        """SIGTERM to the process (as an orchestrator does), then SIGKILL to its group after `grace` seconds.

        Only the leader is signalled: a Dramatiq pool forwards the signal to its
        workers itself, and a second SIGTERM makes them exit without draining.
        """
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def wait_http(url: str, proc: Process, timeout: float = 60) -> None:
    """Until `url` answers 200 (fails early if the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} died:\n{proc.log()[-4000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url}:\n{proc.log()[-4000:]}")


def wait_log(proc: Process, needle: str, timeout: float = 60) -> None:
    """Until the process logged `needle`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in proc.log():
            return
        if not proc.alive():
            raise RuntimeError(f"{proc.name} died:\n{proc.log()[-4000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} never logged {needle!r}:\n{proc.log()[-4000:]}")


def _once_ready(proc: Process, wait: Callable[[], None]) -> Process:
    """`proc` after `wait()` returned; a process that never got ready is killed, not leaked."""
    try:
        wait()
    except BaseException:
        proc.kill()
        raise
    return proc


def start_api(env: dict[str, str], port: int, log_dir: Path, name: str = "api", workers: int = 1) -> Process:
    """An API process (with `workers` uvicorn processes) on `port`, once it is ready."""
    proc = Process(name, [sys.executable, "-m", "api.cli", "api", "--port", str(port), "--workers", str(workers)],
                   env, log_dir)
    proc.env_port = port
    return _once_ready(proc, lambda: wait_http(f"http://127.0.0.1:{port}/readyz", proc))


def start_worker(env: dict[str, str], log_dir: Path, name: str = "worker", processes: int = 1,
                 threads: int = 4, queues: list[str] | None = None, pool: str | None = None) -> Process:
    """A worker pool (`switchyard worker`), once one of its processes is ready."""
    args = [sys.executable, "-m", "api.cli", "worker", "--processes", str(processes),
            "--threads", str(threads)]
    if pool:
        args += ["--pool", pool]
    if queues:
        args += ["--queues", *queues]
    env = {**env, "SWITCHYARD_WORKER_METRICS_PORT": str(free_port())}
    proc = Process(name, args, env, log_dir)
    return _once_ready(proc, lambda: wait_log(proc, "Worker process is ready for action"))


def start_maintenance(env: dict[str, str], log_dir: Path) -> Process:
    proc = Process("maintenance", [sys.executable, "-m", "api.cli", "maintenance"], env, log_dir)
    return _once_ready(proc, lambda: wait_log(proc, "maintenance loop running"))
