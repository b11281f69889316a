"""How a database that did not answer is named, the same way by every command."""

from __future__ import annotations

import psycopg
import pytest

from mds_sink.db.dsn import describe_dsn, unreachable

URL = "postgresql://mds_owner:s3cret@db.internal:6543/mds"


def test_the_address_is_named_without_the_password() -> None:
    assert describe_dsn(URL) == "db.internal:6543/mds as mds_owner"


def test_a_refused_connection_is_one_line_naming_the_address_and_never_the_password() -> None:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect("postgresql://mds_owner:s3cret@127.0.0.1:1/mds", connect_timeout=2)
    reason = unreachable("postgresql://mds_owner:s3cret@127.0.0.1:1/mds", caught.value)
    assert reason is not None
    assert reason.startswith("cannot reach the database at 127.0.0.1:1/mds as mds_owner: ")
    assert "\n" not in reason and "s3cret" not in reason


def test_a_wrapped_cause_is_found_and_other_errors_are_not_described() -> None:
    cause = psycopg.OperationalError("connection to server failed")
    wrapper = RuntimeError("(psycopg.OperationalError) connection to server failed")
    wrapper.__cause__ = cause
    assert unreachable(URL, wrapper) == "cannot reach the database at db.internal:6543/mds as mds_owner: " + str(cause)
    assert unreachable(URL, ValueError("connection in the message is not enough")) is None
    assert unreachable(URL, psycopg.errors.UndefinedTable("relation does not exist")) is None
