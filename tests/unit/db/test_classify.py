from __future__ import annotations

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import PoolTimeout

from mds_sink.db.classify import classify
from mds_sink.errors import BrokerUnavailable, ErrorClass


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (errors.lookup("22003")("integer out of range"), ErrorClass.POISON),
        (errors.lookup("22P02")("invalid input syntax"), ErrorClass.POISON),
        (errors.lookup("23514")("violates check constraint"), ErrorClass.POISON),
        (errors.lookup("23505")("duplicate key"), ErrorClass.POISON),
        (
            errors.lookup("42501")('new row violates row-level security policy for table "bars_minute"'),
            ErrorClass.POISON,
        ),
        (errors.lookup("08006")("connection failure"), ErrorClass.TRANSIENT),
        (errors.lookup("40P01")("deadlock detected"), ErrorClass.TRANSIENT),
        (errors.lookup("40001")("could not serialize access"), ErrorClass.TRANSIENT),
        (errors.lookup("53300")("too many connections"), ErrorClass.TRANSIENT),
        (errors.lookup("53100")("disk full"), ErrorClass.TRANSIENT),
        (errors.lookup("57P01")("terminating connection due to administrator command"), ErrorClass.TRANSIENT),
        (errors.lookup("57P03")("the database system is starting up"), ErrorClass.TRANSIENT),
        (errors.lookup("57014")("canceling statement due to statement timeout"), ErrorClass.TRANSIENT),
        (errors.lookup("55P03")("lock not available"), ErrorClass.TRANSIENT),
        (psycopg.OperationalError("connection refused"), ErrorClass.TRANSIENT),
        (PoolTimeout("couldn't get a connection after 30 sec"), ErrorClass.TRANSIENT),
        (BrokerUnavailable("dead letters not acknowledged"), ErrorClass.TRANSIENT),
        (ConnectionResetError(), ErrorClass.TRANSIENT),
        # A missing grant is the deployment's fault, not the record's: never dead-letter for it.
        (errors.lookup("42501")("permission denied for table bars_minute"), ErrorClass.UNKNOWN),
        (errors.lookup("42P01")('relation "bars" does not exist'), ErrorClass.UNKNOWN),
        (RuntimeError("bug"), ErrorClass.UNKNOWN),
    ],
)
def test_classification(exc: BaseException, expected: ErrorClass) -> None:
    assert classify(exc) is expected
