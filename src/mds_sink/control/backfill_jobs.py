"""The backfill jobs table (migration 0006): create, read, list, cancel, claim and finish a job.

Every call takes an autocommit connection of the sink's (writer) role, the role a backfill writes
rows with. A run holds the job's advisory lock on its own session for as long as it runs: a second
run of the job is refused, and a job recorded as running whose lock nobody holds is `interrupted`
(its process died) and can be resumed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg

from mds_sink.control.backfill import JobReport, PartitionRange, PartitionReport, lock_key
from mds_sink.db import jobs as sql
from mds_sink.errors import QueryError

Connection = psycopg.Connection[tuple[Any, ...]]


def parse_job_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise QueryError(f"{text!r} is not a backfill job id") from None


def create(
    conn: Connection,
    *,
    job_id: uuid.UUID,
    topics: Sequence[str],
    range_from: datetime,
    range_to: datetime,
    tenant: str | None,
    rate_per_s: float | None,
    dry_run: bool,
    requested_by: str,
    ranges: Sequence[PartitionRange],
) -> None:
    """The job and its partitions, in one transaction."""
    with conn.transaction():
        conn.execute(
            sql.INSERT_JOB,
            {
                "job": job_id,
                "topics": list(topics),
                "range_from": range_from,
                "range_to": range_to,
                "tenant": tenant,
                "rate": rate_per_s,
                "dry_run": dry_run,
                "by": requested_by,
            },
        )
        conn.execute(
            sql.INSERT_PARTITIONS,
            (
                job_id,
                [r.topic for r in ranges],
                [r.partition for r in ranges],
                [r.start for r in ranges],
                [r.end for r in ranges],
            ),
        )


def _held(conn: Connection) -> set[tuple[int, int]]:
    # pg_locks shows the two int4 keys as oids (unsigned): back to the signed values lock_key gives.
    def signed(v: int) -> int:
        return v - (1 << 32) if v >= 1 << 31 else v

    return {(signed(int(a)), signed(int(b))) for a, b in conn.execute(sql.LOCKS_HELD)}


def _report(row: tuple[Any, ...], partitions: Sequence[tuple[Any, ...]], held: set[tuple[int, int]]) -> JobReport:
    (job, topics, range_from, range_to, tenant, rate, dry_run, state, cancel, _runner, by, error) = row[:12]
    created, started, finished, updated = row[12:16]
    if state == "running" and lock_key(job) not in held:
        state = "interrupted"
    return JobReport(
        job_id=str(job),
        topics=tuple(topics),
        range_from=range_from,
        range_to=range_to,
        tenant=None if tenant is None else str(tenant),
        rate_per_s=rate,
        dry_run=dry_run,
        state=state,
        cancel_requested=cancel,
        requested_by=by,
        error=error,
        created_at=created,
        started_at=started,
        finished_at=finished,
        updated_at=updated,
        partitions=tuple(PartitionReport(str(p[0]), *(int(v) for v in p[1:])) for p in partitions),
    )


def load(conn: Connection, job_id: uuid.UUID) -> JobReport:
    row = conn.execute(sql.SELECT_JOB, (job_id,)).fetchone()
    if row is None:
        raise QueryError(f"no backfill job {job_id}")
    partitions = conn.execute(sql.SELECT_PARTITIONS, (job_id,)).fetchall()
    return _report(row, partitions, _held(conn))


def list_jobs(conn: Connection, *, limit: int = 50) -> list[JobReport]:
    held = _held(conn)
    rows = conn.execute(sql.SELECT_JOBS, (limit,)).fetchall()
    return [_report(row, conn.execute(sql.SELECT_PARTITIONS, (row[0],)).fetchall(), held) for row in rows]


def request_cancel(conn: Connection, job_id: uuid.UUID) -> JobReport:
    """Ask the job's run to stop after the batch it is writing; a job not running is cancelled now."""
    with conn.transaction():
        found = conn.execute(sql.REQUEST_CANCEL, (job_id,)).fetchone()
        if found is None:
            raise QueryError(f"no backfill job {job_id}")
    report = load(conn, job_id)
    if report.state in ("planned", "interrupted", "failed"):
        # Nobody runs it: nobody else would record the cancellation.
        conn.execute(sql.CANCEL_IDLE, (job_id,))
        report = load(conn, job_id)
    return report


@contextmanager
def locked(url: str, job_id: uuid.UUID, *, connect_timeout_s: float) -> Iterator[Connection]:
    """A session holding the job's lock, for as long as the block runs; QueryError if another holds it."""
    key = lock_key(job_id)
    with psycopg.connect(url, autocommit=True, connect_timeout=max(1, round(connect_timeout_s))) as conn:
        got = conn.execute(sql.TRY_LOCK, key).fetchone()
        if not got or not got[0]:
            raise QueryError(f"backfill job {job_id} is running in another process; cancel it or wait for it")
        try:
            yield conn
        finally:
            if not conn.closed:
                conn.execute(sql.UNLOCK, key)


def claim(conn: Connection, job_id: uuid.UUID, runner: uuid.UUID) -> None:
    """Make `runner` the job's run (under its lock): from now on only its batches move the job."""
    if conn.execute(sql.CLAIM_JOB, {"job": job_id, "runner": runner}).fetchone() is None:
        state = load(conn, job_id).state
        raise QueryError(f"backfill job {job_id} is {state}: nothing to resume")


def finish(conn: Connection, job_id: uuid.UUID, runner: uuid.UUID, state: str, error: str | None = None) -> None:
    conn.execute(sql.FINISH_JOB, {"job": job_id, "runner": runner, "state": state, "error": error})


def cancel_requested(conn: Connection, job_id: uuid.UUID, runner: uuid.UUID) -> tuple[bool, bool]:
    """(cancel requested, `runner` still the job's run)."""
    row = conn.execute(sql.CANCEL_REQUESTED, {"job": job_id, "runner": runner}).fetchone()
    return (bool(row[0]), bool(row[1])) if row is not None else (True, False)
