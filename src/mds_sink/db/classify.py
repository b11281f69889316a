"""The one place that decides: is an error poison (dead-letter the record) or transient (retry)?

Keyed on SQLSTATE classes, as psycopg's own error map is:
- poison: 22 (data exception), 23 (integrity constraint), 42501 raised by row security (a row of
  another tenant): the record itself is wrong, retrying cannot help;
- transient: 08 (connection), 40 (deadlock, serialization), 53 (resources), 57 (operator
  intervention: admin shutdown, cannot connect now, statement timeout), 55P03 (lock timeout),
  and connection-level failures without a SQLSTATE, pool timeouts, broker unavailability;
- fenced: the batch's partitions were claimed by another member (OwnershipLost): never retried;
- anything else is unknown: retried a bounded number of times, then the worker stops with the
  error, so that a bug or a broken grant never dead-letters a whole topic.
"""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout

from mds_sink.core.rejection import Rejection, with_context
from mds_sink.errors import BrokerUnavailable, ErrorClass, OwnershipLost, StoppedOnBadRecord

_POISON_CLASSES = frozenset({"22", "23"})
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_TRANSIENT_STATES = frozenset({"55P03", "55006"})

_SQLSTATE_REASONS = {
    "22003": "db_numeric_out_of_range",
    "22001": "db_string_too_long",
    "22P02": "db_invalid_text",
    "22P05": "db_untranslatable_character",
    "22021": "db_character_not_in_repertoire",
    "22007": "db_invalid_datetime",
    "22008": "db_datetime_out_of_range",
    "23502": "db_not_null_violation",
    "23503": "db_foreign_key_violation",
    "23505": "db_unique_violation",
    "23514": "db_check_violation",
    "42501": "db_row_security",
}


def _is_row_security(exc: psycopg.Error) -> bool:
    # 42501 is also a missing GRANT ("permission denied for table"): that is a deployment error, not
    # a bad record, so only the row-security wording counts as poison.
    return exc.sqlstate == "42501" and "row-level security" in str(exc)


def classify(exc: BaseException) -> ErrorClass:
    if isinstance(exc, OwnershipLost):
        return ErrorClass.FENCED
    if isinstance(exc, StoppedOnBadRecord):
        return ErrorClass.FATAL
    if isinstance(exc, PoolTimeout):
        return ErrorClass.TRANSIENT
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        # Also raised by psycopg itself before the server sees the value (a NUL in text).
        return ErrorClass.POISON
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state is None:
            # No SQLSTATE: the connection broke or could not be made.
            return (
                ErrorClass.TRANSIENT
                if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
                else ErrorClass.UNKNOWN
            )
        if state[:2] in _POISON_CLASSES or _is_row_security(exc):
            return ErrorClass.POISON
        if state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES:
            return ErrorClass.TRANSIENT
        return ErrorClass.UNKNOWN
    if isinstance(exc, ConnectionError | TimeoutError):
        return ErrorClass.TRANSIENT
    if isinstance(exc, BrokerUnavailable):
        return ErrorClass.TRANSIENT
    return ErrorClass.UNKNOWN


def write_rejection(exc: psycopg.Error) -> Rejection:
    """The dead-letter reason for a row the database refused."""
    state = exc.sqlstate or ("22000" if isinstance(exc, psycopg.DataError) else "?")
    code = _SQLSTATE_REASONS.get(state, f"db_{'data' if state.startswith('22') else 'constraint'}_error")
    primary = exc.diag.message_primary or str(exc).splitlines()[0]
    detail = f" ({exc.diag.constraint_name})" if exc.diag.constraint_name else ""
    column = exc.diag.column_name
    return with_context(Rejection("write", code, f"SQLSTATE {state}: {primary}{detail}", column), exc)
