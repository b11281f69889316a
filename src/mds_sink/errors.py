"""Every error mds-sink raises on purpose, in one hierarchy (standard library only).

Each message is one line naming what was wrong and where (which setting, topic/partition/offset,
field): the command line prints it as it is, never a traceback. Which database errors are poison
and which are transient is decided in `db/classify.py`.
"""

from __future__ import annotations

from enum import Enum


class ErrorClass(Enum):
    """What a failed write means for its records (decided by db/classify.py)."""

    POISON = "poison"
    TRANSIENT = "transient"
    FENCED = "fenced"
    FATAL = "fatal"  # stop now, no retry (errors.tolerance=stop met a bad record)
    UNKNOWN = "unknown"


def first_line(exc: BaseException) -> str:
    """What an error says in one line: its first line of text, else the name of its class."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class MdsSinkError(Exception):
    """The base of every error below."""


class SettingsError(MdsSinkError):
    """A setting is missing or wrong; the message names it."""


class StartupError(MdsSinkError):
    """The sink or a command cannot start: a service unreachable, a topic missing, a schema behind."""


class BrokerUnavailable(MdsSinkError):
    """The broker did not answer or did not acknowledge in time (transient)."""


class SinkFailed(MdsSinkError, RuntimeError):
    """A flush failed for good: the sink stops, committing nothing after it (a restart re-delivers it)."""


class StoppedOnBadRecord(MdsSinkError):
    """errors.tolerance is `stop` and a record would be dead-lettered: the sink stops before its batch
    commits, so the record is read again after a restart."""


class KeyConflicts(MdsSinkError):
    """Staged outbox requests whose key the table holds with another job: the transaction rolls back,
    and the flush dead-letters them and writes the rest (never an error that reaches an operator)."""

    def __init__(self, table: str, keys: list[tuple[str, ...]]) -> None:
        super().__init__(f"{len(keys)} {table} key(s) stored with another job")
        self.keys = keys


class OwnershipLost(MdsSinkError):
    """The offsets ledger names another member's epoch for a partition of the batch: it was assigned
    elsewhere since this member claimed it, so the batch's transaction rolls back instead of writing."""


class QueryError(MdsSinkError):
    """Something the operator asked for cannot be answered (unknown tenant, bad range)."""


class SchemaNotFound(MdsSinkError, LookupError):
    """The writer schema id is unknown to the schema source: the record is poison."""


class InputError(MdsSinkError):
    """Input that cannot be read at all from some point on (not text, not gzip)."""


class MigrationError(MdsSinkError):
    """A migration command that cannot run as asked (an unknown revision, say)."""


class LineError(MdsSinkError, ValueError):
    """A line of NDJSON input that cannot become a record."""

    def __init__(self, line_no: int, message: str) -> None:
        super().__init__(f"line {line_no}: {message}")
