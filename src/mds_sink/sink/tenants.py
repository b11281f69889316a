"""Keeps the tenant set current: reloaded every few seconds, so `admin tenants add` needs no restart."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mds_sink.core.validate import TenantSet

log = logging.getLogger(__name__)

MISS_RELOAD_INTERVAL_S = 0.5


class TenantRefresher:
    def __init__(self, load: Callable[[], dict[str, bool]], tenants: TenantSet, every_s: float) -> None:
        self._load = load
        self._tenants = tenants
        self._every_s = every_s
        self._stop = threading.Event()
        self._last_miss_reload = 0.0
        self._thread = threading.Thread(target=self._run, name="mds-tenants", daemon=True)

    def refresh(self) -> None:
        loaded = self._load()
        if loaded != self._tenants.active:
            log.info("tenant set: %d known, %d active", len(loaded), sum(loaded.values()))
        # One assignment swaps the whole map: the consumer thread sees the old set or the new one.
        self._tenants.active = loaded

    def reload_on_miss(self) -> bool:
        """An unknown tenant: reload now, at most twice a second, so a tenant just added is not refused."""
        now = time.monotonic()
        if now - self._last_miss_reload < MISS_RELOAD_INTERVAL_S:
            return False
        self._last_miss_reload = now
        try:
            self.refresh()
        except Exception as exc:  # the record is judged against the set we have
            log.warning("tenant reload failed: %s", exc)
            return False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.refresh()
            except Exception as exc:
                log.debug("tenant refresh failed: %s", exc)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
