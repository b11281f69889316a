"""backfill_jobs and backfill_partitions: time-range backfills from Kafka, resumable per partition.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

`mds-sink backfill` and the control API's `POST /backfill` re-consume a time range of topics outside
the sink's consumer group. A job is one row of backfill_jobs; each partition it reads is one row of
backfill_partitions, with the offsets of the range and how far the job got. The position moves in the
transaction that writes the rows it covers (never backwards, and only under the job's current
`runner`), so a killed job resumes exactly where its last committed batch ended. The live group's
offsets ledger (sink_offsets) is never touched by a backfill.

Not tenant tables: a job may cover every tenant. The sink's role runs jobs (as `run` writes rows) and
needs no more than select, insert and update; the read-only role may see them.
"""

from __future__ import annotations

from alembic import context, op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

STATES = ("planned", "running", "succeeded", "failed", "cancelled")

JOBS_SQL = f"""
CREATE TABLE backfill_jobs (
    job_id            uuid PRIMARY KEY,
    topics            text[] NOT NULL CHECK (cardinality(topics) > 0),
    range_from        timestamptz NOT NULL,
    range_to          timestamptz NOT NULL,
    tenant_id         uuid,
    rate_per_s        double precision CHECK (rate_per_s > 0),
    dry_run           boolean NOT NULL DEFAULT false,
    state             text NOT NULL DEFAULT 'planned' CHECK (state IN ({", ".join(f"'{s}'" for s in STATES)})),
    cancel_requested  boolean NOT NULL DEFAULT false,
    runner            uuid,
    requested_by      text NOT NULL,
    error             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (range_from < range_to)
)
"""

PARTITIONS_SQL = """
CREATE TABLE backfill_partitions (
    job_id          uuid NOT NULL REFERENCES backfill_jobs (job_id) ON DELETE CASCADE,
    topic           text NOT NULL,
    partition       integer NOT NULL CHECK (partition >= 0),
    start_offset    bigint NOT NULL CHECK (start_offset >= 0),
    end_offset      bigint NOT NULL CHECK (end_offset >= start_offset),
    next_offset     bigint NOT NULL CHECK (next_offset >= start_offset AND next_offset <= end_offset),
    records         bigint NOT NULL DEFAULT 0,
    skipped         bigint NOT NULL DEFAULT 0,
    rows_changed    bigint NOT NULL DEFAULT 0,
    rows_unchanged  bigint NOT NULL DEFAULT 0,
    dead_letters    bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, topic, partition)
)
"""


def _role(name: str) -> str:
    configured = context.config.attributes.get(name)
    return str(configured) if configured else {"writer_role": "mds_writer", "reader_role": "mds_reader"}[name]


def upgrade() -> None:
    writer, reader = _role("writer_role"), _role("reader_role")
    op.execute(JOBS_SQL)
    op.execute("CREATE INDEX backfill_jobs_created ON backfill_jobs (created_at DESC)")
    op.execute(
        "COMMENT ON TABLE backfill_jobs IS "
        "'Time-range backfills from Kafka (mds-sink backfill, POST /backfill); progress per partition in "
        "backfill_partitions.'"
    )
    op.execute(
        "COMMENT ON COLUMN backfill_jobs.runner IS "
        "'The run that owns the job now; a batch moves the job''s positions only under it.'"
    )
    op.execute(PARTITIONS_SQL)
    op.execute(
        "COMMENT ON TABLE backfill_partitions IS "
        "'A backfill job''s offsets per partition: [start_offset, end_offset), done up to next_offset.'"
    )
    for table in ("backfill_jobs", "backfill_partitions"):
        op.execute(f'GRANT SELECT, INSERT, UPDATE ON {table} TO "{writer}"')
        op.execute(f'GRANT SELECT ON {table} TO "{reader}"')


def downgrade() -> None:
    op.execute("DROP TABLE backfill_partitions")
    op.execute("DROP TABLE backfill_jobs")
