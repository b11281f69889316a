"""The tenants table, as the owner role keeps it: add, list, enable and disable."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

ADD = (
    "INSERT INTO tenants (tenant_id, name) VALUES (%s, %s) ON CONFLICT (tenant_id) DO UPDATE "
    "SET name = EXCLUDED.name, updated_at = now() RETURNING tenant_id::text, name, active"
)
ADD_MISSING = "INSERT INTO tenants (tenant_id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING"
LIST = "SELECT tenant_id::text, name, active FROM tenants ORDER BY name"
SET_ACTIVE = (
    "UPDATE tenants SET active = %s, updated_at = now() WHERE tenant_id::text = %s OR name = %s "
    "RETURNING tenant_id::text, name, active"
)


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    name: str
    active: bool

    def describe(self) -> str:
        return f"{self.tenant_id}  {self.name}  {'active' if self.active else 'disabled'}"


def add(owner_url: str, name: str, tenant_id: uuid.UUID) -> Tenant:
    with psycopg.connect(owner_url, autocommit=True) as conn:
        row = conn.execute(ADD, (tenant_id, name)).fetchone()
    assert row is not None  # RETURNING of an upsert always has its row
    return Tenant(*row)


def add_missing(owner_url: str, tenants: Mapping[str, str]) -> None:
    """Each name -> id that is not there yet; existing ids are left as they are."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        for name, tenant_id in tenants.items():
            conn.execute(ADD_MISSING, (tenant_id, name))


def list_all(owner_url: str) -> list[Tenant]:
    with psycopg.connect(owner_url) as conn:
        return [Tenant(*row) for row in conn.execute(LIST).fetchall()]


def set_active(owner_url: str, tenant: str, active: bool) -> Tenant | None:
    """The tenant with this id or name, enabled or disabled; None if there is none."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        row = conn.execute(SET_ACTIVE, (active, tenant, tenant)).fetchone()
    return None if row is None else Tenant(*row)
