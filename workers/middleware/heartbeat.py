"""Each worker process beats its identity into Redis (`jobs/pools.py`) so operators see pools, not guesses."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from importlib.metadata import PackageNotFoundError, version

import dramatiq
import msgspec
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware
from loguru import logger

from jobs import metrics, pools
from jobs.settings import get_settings


def _version() -> str:
    try:
        return version("switchyard")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


class Heartbeat(Middleware):
    """Beats every third of the heartbeat timeout from a daemon thread; counts jobs in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._processed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._record: pools.WorkerBeat | None = None

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        # A sibling that crashed left its live-gauge files; this start is a good moment to drop them.
        if reaped := metrics.reap_dead_processes():
            logger.info("dropped the metrics of dead worker processes {}", reaped)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        declared = worker.consumer_whitelist or broker.get_declared_queues()
        queues = sorted(q for q in declared if not q.endswith((".DQ", ".XQ")))
        host, pid = socket.gethostname(), os.getpid()
        self._record = pools.WorkerBeat(
            id=f"{host}:{pid}", host=host, pid=pid, pool=get_settings().pool or "+".join(queues),
            queues=queues, concurrency=worker.worker_threads, in_flight=0, processed=0, version=_version(),
            started_at=pools.now(), last_beat=pools.now(), broker_id=getattr(broker, "broker_id", ""),
        )
        self._thread = threading.Thread(target=self._run, args=(broker,), name="switchyard-heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)  # a beat in flight must not write the record back after we leave
        if self._record is not None:
            try:
                pools.leave(broker.client, self._record.id)  # type: ignore[attr-defined]
            except Exception as exc:  # Redis down at shutdown: the record goes stale, then expires
                logger.warning("could not remove this worker's heartbeat: {}", exc)

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        with self._lock:
            self._in_flight.add(message.message_id)

    def after_process_message(self, broker: dramatiq.Broker, message: MessageProxy, *,
                              result: object = None, exception: BaseException | None = None) -> None:
        with self._lock:
            if message.message_id in self._in_flight:  # a message skipped before this middleware saw it is not
                self._in_flight.discard(message.message_id)
                self._processed += 1

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self.after_process_message(broker, message)

    @staticmethod
    def _loop_answers(within: float) -> bool:
        """Whether the event loop that runs every job runs a no-op within `within` seconds.

        A process whose loop is wedged (a blocking call in a job, a deadlock) must go stale, not keep
        beating from this thread: then operators see it and the liveness probe restarts it.
        """
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            return True
        try:
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop_thread.loop).result(within)
            return True
        except Exception:
            return False

    def _run(self, broker: dramatiq.Broker) -> None:
        timeout_ms = get_settings().heartbeat_timeout_ms
        interval = max(0.2, timeout_ms / 3000)
        while True:
            if self._loop_answers(interval):
                self._beat(broker, timeout_ms)
            else:
                logger.error("the event loop did not answer within {:.1f} s: no heartbeat", interval)
            if self._stop.wait(interval):
                return

    def _beat(self, broker: dramatiq.Broker, timeout_ms: int) -> None:
        assert self._record is not None
        with self._lock:
            record = msgspec.structs.replace(self._record, in_flight=len(self._in_flight),
                                             processed=self._processed, last_beat=pools.now())
        try:
            pools.beat(broker.client, record, timeout_ms)  # type: ignore[attr-defined]
        except Exception as exc:  # Redis restarting: try again next beat
            logger.warning("heartbeat failed: {}", exc)
