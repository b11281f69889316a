"""Database URLs as operators may see them, and the one way a database that did not answer is reported."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

# SQLSTATE classes of a connection that could not be made or used: connection exception, invalid
# authorization, invalid catalog name (no such database); and 57P03, the server cannot accept yet.
_UNREACHABLE_CLASSES = frozenset({"08", "28", "3D"})


def describe_dsn(url: str) -> str:
    """host:port/db as user, without the password."""
    info = conninfo_to_dict(url)
    host, port = info.get("host", "localhost"), info.get("port", 5432)
    return f"{host}:{port}/{info.get('dbname', '')} as {info.get('user', '?')}"


def unreachable(url: str, exc: BaseException) -> str | None:
    """The one-line reason when `exc` says the database at `url` did not answer (also when SQLAlchemy
    wrapped it); None for any other error, which is not for this function to describe."""
    for candidate in (exc, exc.__cause__, getattr(exc, "orig", None)):
        if isinstance(candidate, psycopg.OperationalError):
            state = candidate.sqlstate
            if state is None or state[:2] in _UNREACHABLE_CLASSES or state == "57P03":
                first = str(candidate).strip().splitlines()[0] if str(candidate).strip() else type(candidate).__name__
                return f"cannot reach the database at {describe_dsn(url)}: {first}"
    return None
