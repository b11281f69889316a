"""The database's health, as readiness reports it: checked on a connection of its own.

A sink with nothing to flush never touches its pool, so readiness cannot wait for a flush to fail:
this thread asks the database every few seconds, on its own connection with the connect timeout of
the settings, and an outage turns `database_ok` (and so /readyz) false within that timeout plus one
interval.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import psycopg

from mds_sink.config.settings import DatabaseSettings
from mds_sink.errors import first_line
from mds_sink.sink.control import SinkState

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0


class DatabaseProbe:
    def __init__(self, database: DatabaseSettings, state: SinkState, *, interval_s: float = PROBE_INTERVAL_S) -> None:
        self._url = database.url.get_secret_value()
        self._timeout_s = database.connect_timeout_s
        self._state = state
        self._interval_s = interval_s
        self._conn: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mds-db-probe", daemon=True)

    def check(self) -> bool:
        """One probe: True if the database answered; state.database_ok is set to the answer."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._url,
                    connect_timeout=max(1, int(self._timeout_s)),
                    autocommit=True,
                    # A database that accepts the connection but does not answer counts as down too.
                    options=f"-c statement_timeout={int(self._timeout_s * 1000)} -c application_name=mds-sink-probe",
                )
            self._conn.execute("SELECT 1")
        except psycopg.Error as exc:
            self._close()
            if self._state.database_ok:
                log.warning("database unreachable: %s", first_line(exc))
            self._state.database_ok = False
            return False
        if not self._state.database_ok:
            log.info("database reachable")
        self._state.database_ok = True
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.check()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):  # already broken: nothing to give back
                conn.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._timeout_s + 1)
        self._close()
