"""The side HTTP port: health, readiness, status and Prometheus metrics, served beside the consumer loop."""

from __future__ import annotations

import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mds_sink import __version__
from mds_sink.metrics import REGISTRY

if TYPE_CHECKING:
    from mds_sink.worker import Worker

log = logging.getLogger(__name__)

# A consumer loop that has not turned for this long is stuck (a poll never blocks longer than 5 s).
HEARTBEAT_LIMIT_S = 30.0


class SidePort:
    def __init__(self, server: ThreadingHTTPServer | None) -> None:
        self._server = server

    @property
    def address(self) -> tuple[str, int] | None:
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def status(worker: Worker) -> dict[str, Any]:
    state = worker.state
    partitions = []
    for topic, partition in sorted(state.assignment):
        committed = state.committed.get((topic, partition))
        end = state.end_offsets.get((topic, partition))
        lag = None if end is None else max(0, end - (committed or 0))
        partitions.append(
            {
                "topic": topic,
                "partition": partition,
                "committed": committed,
                "end": end,
                "lag": lag,
                "paused": (topic, partition) in state.paused,
            }
        )
    last = state.last_flush
    return {
        "version": __version__,
        "schema_revision": state.schema_revision,
        "group": worker.settings.kafka.group_id,
        "ready": worker.ready() is None,
        "not_ready_reason": worker.ready(),
        "partitions": partitions,
        "paused": [f"{t}[{p}]" for t, p in sorted(state.paused)],
        "last_flush": None
        if last is None
        else {
            "table": last.table,
            "at": last.at,
            "rows": last.rows,
            "dead_letters": last.dead_letters,
            "duration_s": round(last.duration_s, 4),
        },
        "last_error": state.last_error,
    }


def _handler(worker: Worker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"mds-sink/{__version__}"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

        def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, payload: Any) -> None:
            self._send(code, json.dumps(payload).encode())

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                age = time.monotonic() - worker.state.heartbeat
                if age > HEARTBEAT_LIMIT_S:
                    self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "stuck", "heartbeat_age_s": round(age, 1)})
                else:
                    self._json(HTTPStatus.OK, {"status": "ok", "heartbeat_age_s": round(age, 3)})
            elif path == "/readyz":
                reason = worker.ready()
                if reason is None:
                    self._json(HTTPStatus.OK, {"status": "ready"})
                else:
                    self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "not ready", "reason": reason})
            elif path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/status":
                self._json(HTTPStatus.OK, status(worker))
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    return Handler


def start_side_port(worker: Worker) -> SidePort:
    http = worker.settings.http
    if not http.enabled:
        return SidePort(None)
    server = ThreadingHTTPServer((http.host, http.port), _handler(worker))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="mds-http", daemon=True).start()
    host, port = server.server_address[:2]
    log.info("side port listening on http://%s:%s", host, port)
    return SidePort(server)
