"""Alembic environment: runs on the connection `mds_sink.migrate` hands over (under its advisory lock)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through `mds-sink admin migrate`, which provides the connection")

# One transaction per migration: a failed step leaves the database at the last good revision.
context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
