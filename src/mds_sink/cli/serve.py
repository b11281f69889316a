"""`mds-sink admin serve`: the control API, an HTTP server for the control plane in its own process.

It runs with the owner's credentials (database.owner_url) for the schema and policy actions and the
sink's (database.url) for backfills, binds control_api.host (127.0.0.1 by default) and refuses any
other address without control_api.admin_token. SIGTERM or SIGINT: stop answering, let the running
backfills go after the batch they are writing (they resume with POST /backfill {"resume": id}), exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import typer

from mds_sink.cli.common import fail, settings
from mds_sink.errors import SettingsError, StartupError

log = logging.getLogger("mds_sink.control.api")

# How long a shutdown waits for the backfills it lets go of to finish their batch.
SHUTDOWN_S = 30.0


def serve() -> None:
    """Serve the control API (schema, migrate, policies, retention, aggregates, backfill) until SIGTERM."""
    from mds_sink.control.api import ControlPlane  # noqa: PLC0415  (the database and Kafka clients load here)
    from mds_sink.http.api import serve as listen  # noqa: PLC0415

    s = settings()
    try:
        s.database.require_owner_url("for the control API (it migrates and applies policies)")
    except SettingsError as exc:
        raise fail(str(exc)) from None
    plane = ControlPlane(s)
    api = s.control_api
    try:
        server = listen(
            plane.routes(),
            host=api.host,
            port=api.port,
            token=api.admin_token,
            host_setting="control_api.host (MDS_SINK_CONTROL_API__HOST)",
            token_setting="control_api.admin_token (MDS_SINK_CONTROL_API__ADMIN_TOKEN)",
        )
    except StartupError as exc:
        raise fail(str(exc)) from None
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("control API: %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    host, port = server.address
    guarded = "token required" if api.admin_token is not None else "disabled (no control_api.admin_token)"
    log.info("control API listening on http://%s:%d; mutating routes %s", host, port, guarded)
    typer.echo(f"control API listening on http://{host}:{port}", err=True)
    stop.wait()
    server.stop()
    plane.shutdown(SHUTDOWN_S)
