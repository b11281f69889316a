"""A database URL as operators may see it: host, port, database and user, never the password."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict


def describe_dsn(url: str) -> str:
    """host:port/db as user, without the password."""
    info = conninfo_to_dict(url)
    host, port = info.get("host", "localhost"), info.get("port", 5432)
    return f"{host}:{port}/{info.get('dbname', '')} as {info.get('user', '?')}"
