"""Tenant isolation modes of a table, as SQL (pure; `policy_db` runs it).

- `rls`: row-level security enabled and forced, policy `tenant_isolation` (migration 0001).
- `guard`: row security off; the `tenant_guard` trigger (migration 0002) rejects, with SQLSTATE
  42501, any INSERT or UPDATE whose NEW or OLD tenant_id is not `app.tenant_id`; readers select
  `tenant_view.<table>`, a security-barrier view with the same filter, never the table.

TimescaleDB refuses compression and continuous aggregates on a table with row security, so those
tables are switched to `guard` in the transaction that enables them. On a hypertable the trigger is
present in both modes: chunks do not inherit row security, but they do inherit row triggers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["rls", "guard", "none"]

GUARD_TRIGGER = "tenant_guard"
VIEW_SCHEMA = "tenant_view"
TENANT_FILTER = "tenant_id = NULLIF(pg_catalog.current_setting('app.tenant_id', true), '')::uuid"


@dataclass(frozen=True, slots=True)
class Isolation:
    """What protects a table right now."""

    rls: bool  # row security enabled and forced
    guard: bool  # the tenant_guard trigger exists
    reader_on_table: bool  # the read-only role may select the table itself

    @property
    def mode(self) -> Mode:
        if self.rls:
            return "rls"
        return "guard" if self.guard else "none"

    def describe(self) -> str:
        extra = " + tenant_guard trigger" if self.rls and self.guard else ""
        return f"{self.mode}{extra}"


def add_guard(table: str) -> str:
    return (
        f"CREATE TRIGGER {GUARD_TRIGGER} BEFORE INSERT OR UPDATE ON public.{table} "
        f"FOR EACH ROW EXECUTE FUNCTION public.tenant_guard('{table}')"
    )


def rls_off(table: str) -> str:
    # The policy stays defined (inactive): turning row security back on needs nothing else.
    return f"ALTER TABLE public.{table} NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY"


def reader_off(table: str, reader: str) -> str:
    return f'REVOKE SELECT ON public.{table} FROM "{reader}"'


def to_guard(table: str, current: Isolation, reader: str) -> list[str]:
    """Statements that put `table` in guard mode; run them in one transaction (trigger first)."""
    statements = [] if current.guard else [add_guard(table)]
    if current.rls:
        statements.append(rls_off(table))
    if current.reader_on_table:
        statements.append(reader_off(table, reader))
    return statements


def tenant_view(name: str, reader: str, *, source: str | None = None) -> list[str]:
    """A security-barrier view of `source` (default public.<name>) filtered by app.tenant_id."""
    return [
        f"CREATE VIEW {VIEW_SCHEMA}.{name} WITH (security_barrier) AS "
        f"SELECT * FROM {source or f'public.{name}'} WHERE {TENANT_FILTER}",
        f'GRANT SELECT ON {VIEW_SCHEMA}.{name} TO "{reader}"',
    ]
