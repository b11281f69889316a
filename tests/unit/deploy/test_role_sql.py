"""The compose stack's roles and the local stack's are one design: only passwords and two privileges differ."""

from __future__ import annotations

import re

from tests.deploy_files import ROOT

COMPOSE = ROOT / "deploy" / "compose" / "pg" / "roles.sql"
LOCAL = ROOT / "deploy" / "local" / "pg" / "bootstrap.sql"


def statements(text: str) -> list[str]:
    """The SQL without comments, with passwords and the CREATEDB attribute set aside."""
    body = "\n".join(line.split("--", 1)[0].rstrip() for line in text.splitlines())
    body = re.sub(r"PASSWORD \S+", "PASSWORD ?", body)
    body = re.sub(r"\bN?O?CREATEDB\b", "CREATEDB?", body)
    return [" ".join(s.split()) for s in body.split(";") if s.strip()]


def test_compose_roles_equal_the_local_ones_but_for_passwords_createdb_and_the_extension() -> None:
    compose = statements(COMPOSE.read_text())
    # Only a superuser creates the extension; the local stack's tests make throwaway databases (CREATEDB).
    compose.remove("CREATE EXTENSION IF NOT EXISTS timescaledb")
    assert compose == statements(LOCAL.read_text())
