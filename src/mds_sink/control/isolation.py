"""Tenant isolation modes of a table, as SQL (pure; `policy_db` runs it).

- `rls`: row-level security enabled and forced, policy `tenant_isolation` (migration 0001).
- `guard`: row security off; the `tenant_guard` triggers (function from migration 0002) reject,
  with SQLSTATE 42501, any INSERT or UPDATE whose NEW or OLD tenant_id is not `app.tenant_id`;
  readers select `tenant_view.<table>`, a security-barrier view filtered by the caller's tenant, never
  the table.

Either way the views and the policies filter on `tenant_view.current_tenant()` (migration 0007): the
tenant a reader role is bound to, or `app.tenant_id` for the roles trusted to choose it (owner, writer,
gateway reader). The writer writes through the views too and has no privilege on the tables.

The triggers carry the check in their WHEN clause, so the PL/pgSQL function only runs for a row it
will refuse: a function call per row cost about 20% of upsert throughput, the WHEN clause about what
row security costs. An INSERT trigger's WHEN cannot name OLD, hence two: `tenant_guard` (NEW, on
INSERT or UPDATE) and `tenant_guard_old` (OLD, on UPDATE: a row of another tenant cannot be taken).

TimescaleDB refuses compression and continuous aggregates on a table with row security, so those
tables are switched to `guard` in the transaction that enables them. On a hypertable the trigger is
present in both modes: chunks do not inherit row security, but they do inherit row triggers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["rls", "guard", "none"]

GUARD_TRIGGER = "tenant_guard"  # the name start-up checks (preflight) look for
GUARD_TRIGGERS = (GUARD_TRIGGER, "tenant_guard_old")
VIEW_SCHEMA = "tenant_view"
# What the write guard compares with: the setting (only trusted roles write; a WHEN clause cannot
# hold the subquery below).
CONTEXT = "NULLIF(pg_catalog.current_setting('app.tenant_id', true), '')::uuid"
# What views and policies filter on: a scalar subquery, evaluated once per statement.
TENANT_FILTER = "tenant_id = (SELECT tenant_view.current_tenant())"
# Every bound reader gets SELECT on a view created after it (`tenants reader create` grants the rest).
GRANT_TO_TENANT_READERS = """DO $grant$ DECLARE r name; BEGIN
    FOR r IN SELECT role_name FROM public.tenant_readers ORDER BY 1 LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON tenant_view.%I TO %I', '{view}', r);
    END LOOP;
END $grant$"""


@dataclass(frozen=True, slots=True)
class Isolation:
    """What protects a table right now."""

    rls: bool  # row security enabled and forced
    guard: bool  # both tenant_guard triggers exist
    reader_on_table: bool  # the read-only role may select the table itself

    @property
    def mode(self) -> Mode:
        if self.rls:
            return "rls"
        return "guard" if self.guard else "none"

    def describe(self) -> str:
        extra = " + tenant_guard triggers" if self.rls and self.guard else ""
        return f"{self.mode}{extra}"


def add_guard(table: str) -> list[str]:
    """Both triggers, replacing any half-present pair (in one transaction there is no gap)."""
    call = (
        f"FOR EACH ROW WHEN ({{row}}.tenant_id IS DISTINCT FROM {CONTEXT}) "
        f"EXECUTE FUNCTION public.tenant_guard('{table}')"
    )
    return [
        *(f"DROP TRIGGER IF EXISTS {name} ON public.{table}" for name in GUARD_TRIGGERS),
        f"CREATE TRIGGER {GUARD_TRIGGERS[0]} BEFORE INSERT OR UPDATE ON public.{table} " + call.format(row="NEW"),
        f"CREATE TRIGGER {GUARD_TRIGGERS[1]} BEFORE UPDATE ON public.{table} " + call.format(row="OLD"),
    ]


def rls_off(table: str) -> str:
    # The policy stays defined (inactive): turning row security back on needs nothing else.
    return f"ALTER TABLE public.{table} NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY"


def reader_off(table: str, reader: str) -> str:
    return f'REVOKE SELECT ON public.{table} FROM "{reader}"'


def to_guard(table: str, current: Isolation, reader: str) -> list[str]:
    """Statements that put `table` in guard mode; run them in one transaction (trigger first)."""
    statements = [] if current.guard else add_guard(table)
    if current.rls:
        statements.append(rls_off(table))
    if current.reader_on_table:
        statements.append(reader_off(table, reader))
    return statements


def tenant_view(name: str, reader: str, *, source: str | None = None) -> list[str]:
    """A security-barrier view of `source` (default public.<name>) filtered by the caller's tenant."""
    return [
        f"CREATE VIEW {VIEW_SCHEMA}.{name} WITH (security_barrier) AS "
        f"SELECT * FROM {source or f'public.{name}'} WHERE {TENANT_FILTER}",
        f'GRANT SELECT ON {VIEW_SCHEMA}.{name} TO "{reader}"',
        GRANT_TO_TENANT_READERS.format(view=name),
    ]
