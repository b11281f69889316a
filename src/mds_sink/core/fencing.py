"""Where a partition resumes when it is assigned, from Kafka's committed offset and the offsets ledger.

Pure. The ledger row is written in the rows' own transaction, so it is never behind what is in the
database; Kafka's commit follows it and can be behind (a crash between the two) or unknown (the
broker did not answer in the rebalance callback, or the group never committed).
"""

from __future__ import annotations


def resume_offset(ledger_next: int, committed: int | None) -> int | None:
    """The offset to start from, or None to let the client start from Kafka's committed offset.

    `ledger_next` is 0 for a partition the ledger has never seen a row of: nothing to heal then.
    """
    if ledger_next <= 0:
        return None
    if committed is None or committed < 0 or ledger_next > committed:
        return ledger_next
    return None
