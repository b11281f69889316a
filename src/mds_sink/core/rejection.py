"""Why a record was refused: a stable reason code, the stage, the field, and a human message."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, replace
from typing import Literal

from mds_sink.errors import MdsSinkError

Stage = Literal["decode", "validate", "write"]

# A stack trace in a dead letter's headers is for a human: its last frames are what matters.
TRACE_MAX_CHARS = 4000
TRACE_MESSAGE_CHARS = 500


def with_context(rejection: Rejection, exc: BaseException) -> Rejection:
    """The rejection with the class and the (capped, most recent frames last) stack trace of `exc`."""
    kind = type(exc)
    *frames, last = traceback.format_exception(exc)
    # The message is in the message header already: here it is cut short, so that the frames fit.
    summary = last if len(last) <= TRACE_MESSAGE_CHARS else last[:TRACE_MESSAGE_CHARS] + "...\n"
    trace = ("".join(frames) + summary)[-TRACE_MAX_CHARS:]
    return replace(rejection, exception=f"{kind.__module__}.{kind.__qualname__}", trace=trace)


@dataclass(frozen=True, slots=True)
class Rejection:
    stage: Stage
    code: str  # stable, low-cardinality: used in metrics labels and DLQ headers
    message: str
    field: str | None = None
    # The exception behind it, for the optional dead-letter context headers (errors.context_headers).
    exception: str | None = None  # its class, module-qualified
    trace: str | None = None  # its stack trace, capped at TRACE_MAX_CHARS

    def describe(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.stage}/{self.code}{where}: {self.message}"


class RecordRejected(MdsSinkError):
    """Raised by the pure steps for one record; never for a batch."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.describe())
        self.rejection = rejection


def decode_error(code: str, message: str) -> RecordRejected:
    return RecordRejected(Rejection("decode", code, message))


def invalid(code: str, message: str, field: str | None = None) -> RecordRejected:
    return RecordRejected(Rejection("validate", code, message, field))


def field_error(exc: Exception) -> Rejection:
    """A record whose writer schema lacks a field the rules need, or has it with the wrong type."""
    if isinstance(exc, KeyError):
        return Rejection("validate", "missing_field", f"field {exc.args[0]} is missing", str(exc.args[0]))
    return Rejection("validate", "bad_field", f"{type(exc).__name__}: {exc}")
