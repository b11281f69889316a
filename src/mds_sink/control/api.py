"""The control API's routes (`mds-sink admin serve`): schema, policies, retention, aggregates, backfill.

Each route calls what the command line calls (control.actions, control.backfill_run,
control.backfill_jobs); nothing here is a second implementation. Long actions run in the background:
a POST answers 202 with a status resource at once (or, with `?wait=SECONDS`, the result if it is done
by then), so that no request holds a connection for minutes. Backfill jobs live in the jobs table
(their status outlives this process); other actions are operations kept in memory.

docs/control-api.yaml describes exactly ROUTE_TABLE (tests hold the two together).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mds_sink import metrics
from mds_sink.config.settings import Settings
from mds_sink.control import actions, backfill_jobs, backfill_run
from mds_sink.errors import MdsSinkError, QueryError, first_line

log = logging.getLogger(__name__)

Reply = tuple[int, Any, dict[str, str]]
KEEP_OPERATIONS = 200


class BadRequest(Exception):
    """The request is not what the route takes; the message says what is wrong, for a 400."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _body(raw: bytes, allowed: frozenset[str], *, required: bool = False) -> dict[str, Any]:
    if not raw.strip():
        if required:
            raise BadRequest("a JSON object body is required")
        return {}
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    return value


def _time(fields: Mapping[str, Any], name: str) -> datetime:
    value = fields.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"field {name!r} is required: an ISO 8601 time, e.g. 2026-12-01T09:30:00Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"field {name!r}: {value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass
class Operation:
    """An action running (or run) in the background: its status resource, /operations/{id}."""

    action: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "running"
    requested_at: str = field(default_factory=_now)
    finished_at: str | None = None
    result: Any = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "state": self.state,
            "requested_at": self.requested_at,
            "finished_at": self.finished_at,
            "result": self.result,
            "error": self.error,
        }


class ControlPlane:
    """What the routes act on: the settings (owner and writer credentials), operations, backfill runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()  # the server is shutting down: runs let go, resumable
        self._lock = threading.Lock()
        self._operations: OrderedDict[str, Operation] = OrderedDict()
        self._backfills: dict[str, threading.Event] = {}  # job -> its cancel event, while this process runs it
        self._running: dict[str, threading.Event] = {}  # job -> set when its run ended
        self._slots = threading.Semaphore(settings.control_api.backfill_workers)

    # -- operations -------------------------------------------------------------------------------
    def launch(self, action: str, work: Callable[[], Any]) -> Operation:
        op = Operation(action)
        with self._lock:
            self._operations[op.id] = op
            while len(self._operations) > KEEP_OPERATIONS:
                self._operations.popitem(last=False)

        def run() -> None:
            try:
                op.result = work()
                op.state = "succeeded"
            except MdsSinkError as exc:
                op.state, op.error = "failed", first_line(exc)
            except Exception as exc:
                log.exception("control API: %s failed", action)
                op.state, op.error = "failed", first_line(exc)
            finally:
                op.finished_at = _now()
                op.done.set()
                log.info("control API: %s %s%s", action, op.state, f": {op.error}" if op.error else "")

        threading.Thread(target=run, name=f"mds-op-{action}", daemon=True).start()
        return op

    def _answer(self, op: Operation, query: Mapping[str, str]) -> Reply:
        if op.done.wait(self._wait_s(query)):
            status = HTTPStatus.OK if op.state == "succeeded" else HTTPStatus.INTERNAL_SERVER_ERROR
            return status, op.as_dict(), {}
        return HTTPStatus.ACCEPTED, op.as_dict(), {"Location": f"/operations/{op.id}"}

    def _wait_s(self, query: Mapping[str, str]) -> float:
        raw = query.get("wait", "0")
        try:
            wait = float(raw)
        except ValueError:
            raise BadRequest(f"wait={raw!r}: expected seconds") from None
        limit = self.settings.control_api.max_wait_s
        if not 0 <= wait <= limit:
            raise BadRequest(f"wait={raw}: between 0 and {limit:g} seconds (control_api.max_wait_s)")
        return wait

    # -- routes -----------------------------------------------------------------------------------
    def healthz(self, _p: Mapping[str, str], _q: Mapping[str, str], _b: bytes) -> Reply:
        return HTTPStatus.OK, {"status": "ok"}, {}

    def readyz(self, _p: Mapping[str, str], _q: Mapping[str, str], _b: bytes) -> Reply:
        try:
            with actions.owner_connection(self.settings) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "not ready", "reason": first_line(exc)}, {}
        return HTTPStatus.OK, {"status": "ready"}, {}

    def metrics(self, _p: Mapping[str, str], _q: Mapping[str, str], _b: bytes) -> Reply:
        return HTTPStatus.OK, generate_latest(metrics.REGISTRY), {"Content-Type": CONTENT_TYPE_LATEST}

    def schema_version(self, _p: Mapping[str, str], _q: Mapping[str, str], _b: bytes) -> Reply:
        try:
            return HTTPStatus.OK, actions.schema_version(self.settings), {}
        except Exception as exc:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": first_line(exc)}, {}

    def migrate(self, _p: Mapping[str, str], query: Mapping[str, str], body: bytes) -> Reply:
        fields = _body(body, frozenset({"to", "allow_downgrade"}))
        to = fields.get("to", "head")
        allow = fields.get("allow_downgrade", False)
        if not isinstance(to, str) or not to or not isinstance(allow, bool):
            raise BadRequest("'to' must be a revision (or head, base) and 'allow_downgrade' a boolean")
        self._wait_s(query)
        try:
            direction, target = actions.check_target(self.settings, to, allow_downgrade=allow)
        except QueryError as exc:
            return HTTPStatus.CONFLICT, {"error": str(exc)}, {}
        log.warning("control API: %s to %s requested", direction, target)
        op = self.launch(
            "migrate", lambda: {"direction": direction, **actions.move_schema(self.settings, direction, target)}
        )
        return self._answer(op, query)

    def retention_apply(self, _p: Mapping[str, str], query: Mapping[str, str], body: bytes) -> Reply:
        _body(body, frozenset())
        self._wait_s(query)
        return self._answer(self.launch("retention.apply", lambda: actions.apply_retention(self.settings)), query)

    def policies_apply(self, _p: Mapping[str, str], query: Mapping[str, str], body: bytes) -> Reply:
        _body(body, frozenset())
        self._wait_s(query)
        return self._answer(self.launch("policies.apply", lambda: actions.apply_policies(self.settings)), query)

    def aggregates_refresh(self, _p: Mapping[str, str], query: Mapping[str, str], body: bytes) -> Reply:
        fields = _body(body, frozenset({"from", "to", "aggregates"}), required=True)
        start, end = _time(fields, "from"), _time(fields, "to")
        only = fields.get("aggregates")
        if only is not None and (not isinstance(only, list) or not all(isinstance(n, str) for n in only)):
            raise BadRequest("'aggregates' must be a list of names (bars_5m, bars_1h, bars_1d)")
        if end <= start:
            raise BadRequest("'to' must be after 'from'")
        self._wait_s(query)
        work = lambda: actions.refresh_aggregates(self.settings, start, end, only)  # noqa: E731
        return self._answer(self.launch("aggregates.refresh", work), query)

    def operations(self, _p: Mapping[str, str], _q: Mapping[str, str], _b: bytes) -> Reply:
        with self._lock:
            listed = [op.as_dict() for op in reversed(self._operations.values())]
        return HTTPStatus.OK, {"operations": listed}, {}

    def operation(self, params: Mapping[str, str], _q: Mapping[str, str], _b: bytes) -> Reply:
        with self._lock:
            op = self._operations.get(params["id"])
        if op is None:
            return HTTPStatus.NOT_FOUND, {"error": f"no operation {params['id']} (kept in memory: the latest 200)"}, {}
        return HTTPStatus.OK, op.as_dict(), {}

    # -- backfill ---------------------------------------------------------------------------------
    def backfill_start(self, _p: Mapping[str, str], query: Mapping[str, str], body: bytes) -> Reply:
        allowed = frozenset({"topics", "from", "to", "tenant", "rate_per_s", "dry_run", "resume"})
        fields = _body(body, allowed, required=True)
        wait = self._wait_s(query)
        try:
            if "resume" in fields:
                if set(fields) != {"resume"}:
                    raise BadRequest("'resume' takes no other field: the job keeps its range and options")
                job_id = backfill_jobs.parse_job_id(str(fields["resume"]))
                with backfill_run.writer_connection(self.settings) as conn:
                    job = backfill_jobs.load(conn, job_id)
                if job.state in ("running", "succeeded"):
                    return HTTPStatus.CONFLICT, {"error": f"backfill job {job_id} is {job.state}"}, {}
            else:
                planned = backfill_run.start(self.settings, _request(fields), requested_by="api")
                if planned.job is None:
                    return HTTPStatus.OK, {"job": None, "message": planned.message}, {}
                job_id = uuid.UUID(planned.job.job_id)
        except (QueryError, BadRequest) as exc:
            return HTTPStatus.BAD_REQUEST, {"error": str(exc)}, {}
        except MdsSinkError as exc:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": first_line(exc)}, {}
        done = self._run_backfill(job_id)
        done.wait(wait)
        report = self._job(job_id)
        location = {"Location": f"/backfill/{job_id}"}
        return (HTTPStatus.OK if done.is_set() else HTTPStatus.ACCEPTED), report, location

    def _run_backfill(self, job_id: uuid.UUID) -> threading.Event:
        cancel, done = threading.Event(), threading.Event()
        with self._lock:
            self._backfills[str(job_id)] = cancel
            self._running[str(job_id)] = done

        def run() -> None:
            try:
                with self._slots:  # at most control_api.backfill_workers at once; the rest wait, planned
                    if not cancel.is_set() and not self.stopping.is_set():
                        backfill_run.run(self.settings, job_id, cancel=cancel, stop=self.stopping)
            except Exception as exc:  # recorded on the job by the run, or it never started
                log.warning("backfill %s: %s", job_id, first_line(exc))
            finally:
                with self._lock:
                    self._backfills.pop(str(job_id), None)
                    self._running.pop(str(job_id), None)
                done.set()

        threading.Thread(target=run, name=f"mds-backfill-{str(job_id)[:8]}", daemon=True).start()
        return done

    def _job(self, job_id: uuid.UUID) -> dict[str, Any]:
        with backfill_run.writer_connection(self.settings) as conn:
            return backfill_jobs.load(conn, job_id).as_dict()

    def backfill_list(self, _p: Mapping[str, str], query: Mapping[str, str], _b: bytes) -> Reply:
        try:
            limit = int(query.get("limit", "50"))
        except ValueError:
            raise BadRequest("limit: expected a number") from None
        if not 1 <= limit <= 1000:
            raise BadRequest("limit: between 1 and 1000")
        with backfill_run.writer_connection(self.settings) as conn:
            found = backfill_jobs.list_jobs(conn, limit=limit)
        return HTTPStatus.OK, {"jobs": [j.as_dict(partitions=False) for j in found]}, {}

    def backfill_get(self, params: Mapping[str, str], _q: Mapping[str, str], _b: bytes) -> Reply:
        try:
            return HTTPStatus.OK, self._job(backfill_jobs.parse_job_id(params["job"])), {}
        except QueryError as exc:
            return HTTPStatus.NOT_FOUND, {"error": str(exc)}, {}

    def backfill_cancel(self, params: Mapping[str, str], _q: Mapping[str, str], _b: bytes) -> Reply:
        try:
            job_id = backfill_jobs.parse_job_id(params["job"])
            with backfill_run.writer_connection(self.settings) as conn:
                report = backfill_jobs.request_cancel(conn, job_id)  # a run in any process sees it between batches
            with self._lock:
                local = self._backfills.get(str(job_id))
            if local is not None:
                local.set()  # this process runs it (or was to): it stops after the batch it is writing
        except QueryError as exc:
            return HTTPStatus.NOT_FOUND, {"error": str(exc)}, {}
        log.warning("control API: backfill %s cancel requested", job_id)
        return HTTPStatus.ACCEPTED if report.state == "running" else HTTPStatus.OK, report.as_dict(), {}

    def routes(
        self,
    ) -> dict[str, dict[str, tuple[Callable[[Mapping[str, str], Mapping[str, str], bytes], Reply], bool]]]:
        """path -> method -> (handler, needs the token), from ROUTE_TABLE."""
        return {
            path: {method: (_guarded(getattr(self, name)), protected) for method, (name, protected) in methods.items()}
            for path, methods in ROUTE_TABLE.items()
        }

    def shutdown(self, timeout_s: float) -> None:
        """Let go of the backfills this process runs (they stay resumable), waiting up to `timeout_s`."""
        self.stopping.set()
        with self._lock:
            running = list(self._running.values())
        for done in running:
            done.wait(timeout_s)


def _request(fields: Mapping[str, Any]) -> backfill_run.BackfillRequest:
    topics = fields.get("topics")
    if not isinstance(topics, list) or not topics or not all(isinstance(t, str) and t for t in topics):
        raise BadRequest("field 'topics' is required: a list of topic names")
    tenant, rate, dry_run = fields.get("tenant"), fields.get("rate_per_s"), fields.get("dry_run", False)
    if tenant is not None and not isinstance(tenant, str):
        raise BadRequest("'tenant' must be a tenant id")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0):
        raise BadRequest("'rate_per_s' must be a positive number")
    if not isinstance(dry_run, bool):
        raise BadRequest("'dry_run' must be a boolean")
    return backfill_run.BackfillRequest(
        tuple(topics), _time(fields, "from"), _time(fields, "to"), tenant=tenant, rate_per_s=rate, dry_run=dry_run
    )


def _guarded(
    handler: Callable[[Mapping[str, str], Mapping[str, str], bytes], Reply],
) -> Callable[[Mapping[str, str], Mapping[str, str], bytes], Reply]:
    def handle(params: Mapping[str, str], query: Mapping[str, str], body: bytes) -> Reply:
        try:
            return handler(params, query, body)
        except BadRequest as exc:
            return HTTPStatus.BAD_REQUEST, {"error": str(exc)}, {}

    return handle


# path -> method -> (ControlPlane method, needs the token). Every route but the probes, the metrics and
# the schema version needs it: the jobs' and operations' details name tenants and carry errors.
ROUTE_TABLE: dict[str, dict[str, tuple[str, bool]]] = {
    "/healthz": {"GET": ("healthz", False)},
    "/readyz": {"GET": ("readyz", False)},
    "/metrics": {"GET": ("metrics", False)},
    "/schema/version": {"GET": ("schema_version", False)},
    "/migrate": {"POST": ("migrate", True)},
    "/retention/apply": {"POST": ("retention_apply", True)},
    "/aggregates/refresh": {"POST": ("aggregates_refresh", True)},
    "/policies/apply": {"POST": ("policies_apply", True)},
    "/operations": {"GET": ("operations", True)},
    "/operations/{id}": {"GET": ("operation", True)},
    "/backfill": {"POST": ("backfill_start", True), "GET": ("backfill_list", True)},
    "/backfill/{job}": {"GET": ("backfill_get", True), "DELETE": ("backfill_cancel", True)},
}
