"""What publishing can raise: retryable (publish the record again later) or permanent (fix the record).

Each names the record (`bar <tenant>|<vendor>|<symbol> ts=...`) and, for a refusal, the field, in one
line. Catch `PublishError` for both, or one kind.
"""

from __future__ import annotations

from mds_sink.core.rejection import Rejection
from mds_sink.errors import MdsSinkError


class PublishError(MdsSinkError):
    """A record was not published; `record` names it, `reason` says why."""

    def __init__(self, record: str, message: str) -> None:
        super().__init__(f"{record}: {message}")
        self.record = record
        self.reason = message


class RetryablePublishError(PublishError):
    """The broker did not take or acknowledge the record in time: publishing it again may succeed
    (the idempotent producer keeps a retry within one publisher from duplicating it)."""


class PermanentPublishError(PublishError):
    """Publishing this record again will fail again: it is invalid, too large, or not allowed."""


class RecordInvalid(PermanentPublishError):
    """The sink would dead-letter the record; refused before sending. `rejection` is the sink's own."""

    def __init__(self, record: str, rejection: Rejection) -> None:
        super().__init__(record, rejection.describe())
        self.rejection = rejection
        self.field = rejection.field


class NotAcknowledged(PublishError):
    """`flush()` found records that were not acknowledged; `failures` has one error per record, each
    retryable or permanent (`retryable`: all of them are)."""

    def __init__(self, failures: list[PublishError], total: int) -> None:
        first = failures[0]
        super().__init__(first.record, f"{len(failures)} of {total} records not acknowledged, first: {first}")
        self.failures = failures
        self.retryable = all(isinstance(f, RetryablePublishError) for f in failures)
