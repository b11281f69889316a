"""Where an assigned partition resumes: the offsets ledger when it is ahead of Kafka, else Kafka."""

from __future__ import annotations

import pytest

from mds_sink.core.fencing import resume_offset


@pytest.mark.parametrize(
    ("ledger", "committed", "expected"),
    [
        (50, 40, 50),  # a crash between the rows' commit and Kafka's: the ledger is ahead
        (50, 50, None),  # in step: the client starts from Kafka's offset
        (40, 50, None),  # Kafka moved ahead on purpose (an operator's reset): Kafka wins
        (50, None, 50),  # the broker did not answer in the callback: the ledger alone says
        (50, -1001, 50),  # nothing committed in Kafka yet
        (0, None, None),  # never written: nothing to heal, the client's reset policy applies
        (0, 30, None),
    ],
)
def test_resume_offset(ledger: int, committed: int | None, expected: int | None) -> None:
    assert resume_offset(ledger, committed) == expected
