"""SQL of the backfill jobs tables (migration 0006): a job, its partitions, and its progress.

A job's progress per partition moves in the transaction that writes the rows it covers (the flush's
`also` statement, db/writer.py), never backwards, and only while the job's `runner` is the run that
moves it: a run that lost its job to another (resumed elsewhere while it stalled) rolls back.
"""

from __future__ import annotations

from psycopg import sql

JOB_COLUMNS = (
    "job_id, topics, range_from, range_to, tenant_id, rate_per_s, dry_run, state, cancel_requested, "
    "runner, requested_by, error, created_at, started_at, finished_at, updated_at"
)
PARTITION_COLUMNS = (
    "topic, partition, start_offset, end_offset, next_offset, records, skipped, rows_changed, rows_unchanged, "
    "dead_letters"
)

INSERT_JOB = (
    "INSERT INTO backfill_jobs (job_id, topics, range_from, range_to, tenant_id, rate_per_s, dry_run, requested_by) "
    "VALUES (%(job)s, %(topics)s, %(range_from)s, %(range_to)s, %(tenant)s, %(rate)s, %(dry_run)s, %(by)s)"
)

INSERT_PARTITIONS = (
    "INSERT INTO backfill_partitions (job_id, topic, partition, start_offset, end_offset, next_offset) "
    "SELECT %s, v.topic, v.partition, v.start_offset, v.end_offset, v.start_offset "
    "FROM unnest(%s::text[], %s::integer[], %s::bigint[], %s::bigint[]) "
    "AS v(topic, partition, start_offset, end_offset)"
)

SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM backfill_jobs WHERE job_id = %s"
SELECT_JOBS = f"SELECT {JOB_COLUMNS} FROM backfill_jobs ORDER BY created_at DESC, job_id LIMIT %s"
SELECT_PARTITIONS = f"SELECT {PARTITION_COLUMNS} FROM backfill_partitions WHERE job_id = %s ORDER BY topic, partition"

# A run takes the job over: a new runner, the error of an earlier run cleared; a finished job stays so.
CLAIM_JOB = (
    "UPDATE backfill_jobs SET runner = %(runner)s, state = 'running', cancel_requested = false, error = NULL, "
    "started_at = coalesce(started_at, now()), finished_at = NULL, updated_at = now() "
    "WHERE job_id = %(job)s AND state <> 'succeeded' RETURNING job_id"
)

# The end of a run, under its runner only (a run that lost the job leaves the new run's state alone).
FINISH_JOB = (
    "UPDATE backfill_jobs SET state = %(state)s, error = %(error)s, finished_at = now(), updated_at = now() "
    "WHERE job_id = %(job)s AND runner = %(runner)s"
)

REQUEST_CANCEL = (
    "UPDATE backfill_jobs SET cancel_requested = true, updated_at = now() WHERE job_id = %s RETURNING state"
)

# A job nobody runs (never started, its run died, or failed) is cancelled at once.
CANCEL_IDLE = (
    "UPDATE backfill_jobs SET state = 'cancelled', finished_at = now(), updated_at = now() "
    "WHERE job_id = %s AND state IN ('planned', 'running', 'failed')"
)

# A job nobody runs any more (its runner died) keeps 'running' until resumed; asked between batches.
CANCEL_REQUESTED = "SELECT cancel_requested, runner = %(runner)s FROM backfill_jobs WHERE job_id = %(job)s"

# The job's lock: held by the session of the run for as long as it runs, so that a second run of
# the same job is refused, and a run that died (its session gone) is seen as not running.
# Key: the job's 128-bit id folded into the two int4 halves pg_try_advisory_lock(int, int) takes,
# under a class distinct from the one of the migrations' lock (a single bigint).
TRY_LOCK = "SELECT pg_try_advisory_lock(%s, %s)"
UNLOCK = "SELECT pg_advisory_unlock(%s, %s)"
# Which of these jobs' locks are held by some session now (the jobs are running somewhere).
LOCKS_HELD = (
    "SELECT l.classid::bigint, l.objid::bigint FROM pg_locks l "
    "WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted AND l.database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database())"
)

# The data tables' rows a flush inserted or updated: the backend's own statistics of those tables
# (pg_stat_get_xact_*: pending, so constant between two statements of one transaction except for what
# the transaction does) read before the upserts and after. They also hold what earlier transactions
# of the session did and have not reported yet, hence the difference. Hypertables count in their
# chunks (children in pg_inherits). Parameter `targets`: 'public.<table>' names.
_TOUCHED = (
    "SELECT coalesce(sum(pg_stat_get_xact_tuples_inserted(t.oid) + pg_stat_get_xact_tuples_updated(t.oid)), 0)"
    "::bigint FROM (SELECT unnest(%(targets)s::regclass[])::oid AS oid UNION ALL "
    "SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = ANY(%(targets)s::regclass[])) t"
)
CHANGED_BEFORE = f"SELECT set_config('mds.rows_touched_before', ({_TOUCHED})::text, true)"
CHANGED_ROWS = f"SELECT ({_TOUCHED}) - current_setting('mds.rows_touched_before')::bigint AS n"

_ADVANCE = sql.SQL(
    "UPDATE backfill_partitions p SET next_offset = greatest(p.next_offset, %(next)s), "
    "records = p.records + %(records)s, skipped = p.skipped + %(skipped)s, "
    "rows_changed = p.rows_changed + {changed}, rows_unchanged = p.rows_unchanged + %(staged)s - {changed}, "
    "dead_letters = p.dead_letters + %(dead)s, updated_at = now() "
    "FROM backfill_jobs j WHERE p.job_id = %(job)s AND p.topic = %(topic)s AND p.partition = %(partition)s "
    "AND j.job_id = p.job_id AND j.runner = %(runner)s RETURNING j.cancel_requested"
)

# In the flush's transaction: count the rows it changed, move the partition's position and counts.
# One row (changed, moved, cancel requested); `moved` false: the job has another runner now.
ADVANCE_WITH_FLUSH = sql.SQL(
    "WITH changed AS ({changed_rows}), moved AS ({advance}) "
    "SELECT (SELECT n FROM changed), EXISTS (SELECT 1 FROM moved), coalesce((SELECT bool_or(cancel_requested) "
    "FROM moved), false)"
).format(
    changed_rows=sql.SQL(CHANGED_ROWS),
    advance=_ADVANCE.format(changed=sql.SQL("(SELECT n FROM changed)")),
)

# A dry run's progress: its probe rolled back, the counts are recorded on their own.
ADVANCE_COUNTED = sql.SQL(
    "WITH moved AS ({advance}) SELECT %(changed)s::bigint, EXISTS (SELECT 1 FROM moved), "
    "coalesce((SELECT bool_or(cancel_requested) FROM moved), false)"
).format(advance=_ADVANCE.format(changed=sql.Placeholder("changed")))
