"""Why a record was refused: a stable reason code, the stage, the field, and a human message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mds_sink.errors import MdsSinkError

Stage = Literal["decode", "validate", "write"]


@dataclass(frozen=True, slots=True)
class Rejection:
    stage: Stage
    code: str  # stable, low-cardinality: used in metrics labels and DLQ headers
    message: str
    field: str | None = None

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
