"""The side HTTP port: health, readiness, status, Prometheus metrics and the admin API.

It runs in its own threads beside the consumer loop and sees the sink only through SinkControl
(mds_sink.sink.control): it reads the published state, and admin actions on the consumer are queued
to the consumer thread. Every path is in ROUTES, and docs/openapi.yaml describes exactly these
(tests hold the two together).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr

from mds_sink import __version__, metrics
from mds_sink.errors import StartupError
from mds_sink.http import admin as http_admin
from mds_sink.http.admin import BadRequest, Reply
from mds_sink.http.base import BadBody, Methods, Server, body_length
from mds_sink.sink.control import SinkControl

log = logging.getLogger(__name__)

# A consumer loop that has not turned for this long is stuck (a poll never blocks longer than 5 s).
HEARTBEAT_LIMIT_S = 30.0
# A client that sends its request this slowly holds a thread; drop it.
REQUEST_TIMEOUT_S = 10.0
ADMIN_REALM = 'Bearer realm="mds-sink admin"'


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(payload, indent=1).encode() + b"\n", headers=headers or {})


@dataclass(frozen=True, slots=True)
class Route:
    handler: Callable[[SinkControl, bytes], Response]
    admin: bool = False


# -- public endpoints -----------------------------------------------------------------------------
def healthz(sink: SinkControl, _body: bytes) -> Response:
    age = time.monotonic() - sink.state.heartbeat
    if age > HEARTBEAT_LIMIT_S:
        return json_response(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "stuck", "heartbeat_age_s": round(age, 1)})
    return json_response(HTTPStatus.OK, {"status": "ok", "heartbeat_age_s": round(age, 3)})


def readyz(sink: SinkControl, _body: bytes) -> Response:
    reason = sink.ready()
    if reason is None:
        return json_response(HTTPStatus.OK, {"status": "ready"})
    return json_response(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "not ready", "reason": reason})


def prometheus_metrics(_sink: SinkControl, _body: bytes) -> Response:
    return Response(HTTPStatus.OK, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds")


def status(sink: SinkControl) -> dict[str, Any]:
    """What an operator asks first: where is each partition, what is paused, when did it last write."""
    state = sink.state
    snap = state.snapshot  # immutable, published whole by the consumer thread
    partitions = []
    for topic, partition in sorted(snap.assignment):
        tp = (topic, partition)
        end = snap.end_offsets.get(tp)
        committed = snap.committed.get(tp)
        partitions.append(
            {
                "topic": topic,
                "partition": partition,
                "committed": committed,
                "end": end,
                "lag": None if end is None else max(0, end - (committed or 0)),
                "paused": tp in snap.paused,
                "paused_by_operator": tp in snap.operator_paused,
                "claimed": tp not in snap.unclaimed,
            }
        )
    last = state.last_flush
    reason = sink.ready()
    return {
        "version": __version__,
        "schema_revision": state.schema_revision,
        "group": sink.settings.kafka.group_id,
        "topics": sorted(sink.topics),
        "ready": reason is None,
        "not_ready_reason": reason,
        "heartbeat_age_s": round(time.monotonic() - state.heartbeat, 3),
        "database_ok": state.database_ok,
        "breaker_open": state.breaker_open,
        "partitions": partitions,
        "lag_total": sum(p["lag"] or 0 for p in partitions),
        "paused": [f"{t}[{p}]" for t, p in sorted(snap.paused)],
        # Held until an operator resumes them, assigned here now or not: applied again if assigned here.
        "operator_paused": [f"{t}[{p}]" for t, p in sorted(snap.operator_paused)],
        "buffered_records": snap.buffered,
        "last_flush": None
        if last is None
        else {
            "table": last.table,
            "at": _iso(last.at),
            "age_s": round(max(0.0, time.time() - last.at), 3),
            "rows": last.rows,
            "dead_letters": last.dead_letters,
            "duration_s": round(last.duration_s, 4),
        },
        "last_error": state.last_error,
        "admin_api": sink.settings.http.admin_token is not None,
    }


def status_endpoint(sink: SinkControl, _body: bytes) -> Response:
    return json_response(HTTPStatus.OK, status(sink))


def _admin(action: Callable[[SinkControl, bytes], Reply]) -> Route:
    def handle(sink: SinkControl, body: bytes) -> Response:
        try:
            code, payload = action(sink, body)
        except BadRequest as exc:
            return json_response(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        return json_response(code, payload)

    return Route(handle, admin=True)


ROUTES: dict[str, dict[str, Route]] = {
    "/healthz": {"GET": Route(healthz)},
    "/readyz": {"GET": Route(readyz)},
    "/metrics": {"GET": Route(prometheus_metrics)},
    "/status": {"GET": Route(status_endpoint)},
    "/admin/pause": {"POST": _admin(http_admin.pause)},
    "/admin/resume": {"POST": _admin(http_admin.resume)},
    "/admin/flush": {"POST": _admin(http_admin.flush)},
    "/admin/tenants/reload": {"POST": _admin(http_admin.reload_tenants)},
    "/admin/log-level": {"PUT": _admin(http_admin.log_level)},
    "/admin/config": {"GET": _admin(http_admin.config)},
}


# -- transport ------------------------------------------------------------------------------------
def _digest(value: str) -> bytes:
    # Hashing first makes the comparison's time independent of the presented token's length too.
    return hashlib.sha256(value.encode()).digest()


def authenticate(token: SecretStr | None, authorization: str | None) -> Response | None:
    """None when the caller may use the admin API; otherwise the refusal (never saying why a token failed)."""
    if token is None:
        return json_response(HTTPStatus.FORBIDDEN, {"error": "admin API disabled: http.admin_token is not set"})
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return json_response(
            HTTPStatus.UNAUTHORIZED, {"error": "authentication required"}, {"WWW-Authenticate": ADMIN_REALM}
        )
    if not hmac.compare_digest(_digest(presented.strip()), _digest(token.get_secret_value())):
        return json_response(HTTPStatus.FORBIDDEN, {"error": "forbidden"})
    return None


def _handler(sink: SinkControl) -> type[BaseHTTPRequestHandler]:
    class Handler(Methods):
        server_version = f"mds-sink/{__version__}"
        timeout = REQUEST_TIMEOUT_S

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

        def _send(self, response: Response) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)

        def _dispatch(self) -> None:
            path = urlsplit(self.path).path
            methods = ROUTES.get(path)
            if methods is None:
                self._send(json_response(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"}))
                return
            route = methods.get(self.command)
            if route is None:
                allowed = ", ".join(sorted(methods))
                self._send(
                    json_response(
                        HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"use {allowed} for {path}"}, {"Allow": allowed}
                    )
                )
                return
            if route.admin:
                token = sink.settings.http.admin_token
                refusal = authenticate(token, self.headers.get("Authorization"))
                if refusal is not None:
                    if refusal.status == HTTPStatus.FORBIDDEN and token is not None:
                        log.warning("admin: wrong token from %s for %s", self.client_address[0], path)
                    self._send(refusal)
                    return
            try:
                length = body_length(self.headers.get("Content-Length"), http_admin.MAX_BODY_BYTES)
            except BadBody as bad:
                self._send(json_response(bad.status, {"error": bad.message}))
                return
            body = self.rfile.read(length) if length else b""
            try:
                response = route.handler(sink, body)
            except Exception:
                log.exception("http: %s %s failed", self.command, path)
                response = json_response(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
            self._send(response)

    return Handler


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


# The side port of each running sink, so callers (tests, the demo) can find an ephemeral port.
_PORTS: weakref.WeakKeyDictionary[SinkControl, SidePort] = weakref.WeakKeyDictionary()


def side_port(sink: SinkControl) -> SidePort | None:
    return _PORTS.get(sink)


def start_side_port(sink: SinkControl) -> SidePort:
    http = sink.settings.http
    if not http.enabled:
        return SidePort(None)
    # Every series the dashboard and the alerts use exists from the first scrape, at zero.
    metrics.preset(topics=sink.topics, tables=sink.tables)
    # Every other gauge is set by the consumer loop and freezes with it; this one is read at scrape time.
    metrics.HEARTBEAT_AGE.set_function(lambda: time.monotonic() - sink.state.heartbeat)
    try:
        server = Server((http.host, http.port), _handler(sink))
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {http.host}:{http.port} (settings http.host, http.port): {exc.strerror or exc}"
        ) from None
    threading.Thread(target=server.serve_forever, name="mds-http", daemon=True).start()
    port = SidePort(server)
    _PORTS[sink] = port
    host, bound = server.server_address[:2]
    admin = "enabled" if http.admin_token is not None else "disabled (no http.admin_token)"
    log.info("side port listening on http://%s:%s; admin API %s", host, bound, admin)
    return port
