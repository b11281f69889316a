"""sink_offsets.epoch: fencing, so that a member that lost its partitions can no longer write them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

A sink claims each partition it is assigned by incrementing that partition's `epoch` (inserting the
row at offset 0 if it has none), and every flush moves `next_offset` only where the epoch is still
the one it claimed. A member that stalled past its session timeout (a GC pause, SIGSTOP, a frozen
VM) and wakes up with a batch in hand finds the epoch moved by the member that took over: its
transaction rolls back instead of writing rows or moving the ledger. `next_offset` never moves
backwards (the update takes the greater of the two).
"""

from __future__ import annotations

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE sink_offsets ADD COLUMN epoch bigint NOT NULL DEFAULT 0")
    op.execute(
        "COMMENT ON COLUMN sink_offsets.epoch IS "
        "'Incremented by each sink that is assigned the partition; a flush moves next_offset only under "
        "the epoch it claimed (fencing a member that lost the partition).'"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE sink_offsets DROP COLUMN epoch")
