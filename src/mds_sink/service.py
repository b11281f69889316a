"""The composition root: the sink process built from its worker and its side port.

The order of effects, one function (`Service.run`):
    1. open the worker's resources: pool, database checks, topics, schemas, flusher, producer, consumer
    2. bind the side port, before the group sees this member: a port in use fails the start-up
       without a rebalance
    3. join the group and consume until stopped, then drain
    4. close everything in reverse order, whatever happened (a revocation on the way out drains only
       what may still settle)
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

from psycopg_pool import ConnectionPool

from mds_sink.config.settings import Settings
from mds_sink.http.server import start_side_port
from mds_sink.sink.control import SinkState
from mds_sink.sink.gc_tuning import tune_for_throughput
from mds_sink.sink.worker import Worker

log = logging.getLogger(__name__)


class Service:
    def __init__(self, settings: Settings, *, state: SinkState | None = None) -> None:
        self.settings = settings
        self.worker = Worker(settings, state=state)

    @property
    def pool(self) -> ConnectionPool:
        """The worker's database pool (closed once the service has stopped)."""
        return self.worker.pool

    def run(self) -> int:
        """Consume until stopped; returns the process exit code. Raises SinkFailed or StartupError."""
        worker = self.worker
        drained = False
        with contextlib.ExitStack() as resources:
            resources.callback(worker.close)  # what of it was opened, in reverse order; never raises
            worker.open()
            tune_for_throughput()
            side_port = start_side_port(worker)
            resources.callback(_quietly, "side port", side_port.stop)
            worker.start()
            drained = worker.consume()
        log.info("stopped%s", "" if drained else " without draining everything")
        return 0 if drained else 1

    def install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            log.info("received %s: draining", signal.Signals(signum).name)
            self.worker.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)


def _quietly(name: str, close: Callable[[], object]) -> None:
    """A close that fails is logged: the closes after it must still run."""
    try:
        close()
    except Exception as exc:
        log.warning("%s close: %s", name, exc)
