"""Dead-letter records: the original key, value and headers, plus `mds.dlq.*` headers with the reason.

Header scheme (all values UTF-8 text):

| header | meaning |
|---|---|
| mds.dlq.error.class | `poison` (only poison is dead-lettered; transient errors are retried) |
| mds.dlq.reason | stable reason code, e.g. `unknown_tenant`, `bad_magic`, `db_check_violation` |
| mds.dlq.message | human-readable reason |
| mds.dlq.stage | `decode`, `validate` or `write` |
| mds.dlq.field | the offending field, when known |
| mds.dlq.source.topic / .partition / .offset / .timestamp | coordinates of the original record (timestamp in ms) |
| mds.dlq.group | consumer group that refused it |
| mds.dlq.sink.version | version of mds-sink that refused it |
| mds.dlq.failed.at | time of failure, ISO 8601 UTC |
| mds.dlq.replay.count | how many times it was replayed already (0 on first failure) |
| mds.dlq.exception.class | with errors.context_headers: the exception's class, module-qualified |
| mds.dlq.exception.stacktrace | with errors.context_headers: its stack trace, at most 4,000 characters |

Decode reasons: `null_value` (a tombstone), `empty_value` (0 bytes), `truncated` (shorter than its
header or its Avro body), `bad_magic`, `unknown_schema`, `schema_mismatch`, `corrupt_avro`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mds_sink.core.batcher import DeadLetter

PREFIX = "mds.dlq."
REPLAY_COUNT = PREFIX + "replay.count"

Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


def dead_letter_topic(pattern: str, source_topic: str) -> str:
    return pattern.replace("{topic}", source_topic)


def replay_count(headers: Sequence[tuple[str, str | bytes | None]] | None) -> int:
    for name, value in headers or ():
        if name == REPLAY_COUNT and value is not None:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def build(
    dead: DeadLetter,
    *,
    topic_pattern: str,
    group: str,
    version: str,
    now: datetime,
    context: bool = False,
) -> DeadLetterRecord:
    source = dead.source
    message = source.message
    key = value = None
    original: list[tuple[str, bytes | None]] = []
    timestamp_ms = -1
    if message is not None:
        key, value = message.key(), message.value()
        original = list(message.headers() or [])
        timestamp_ms = message.timestamp()[1]
    # Headers of an earlier failure are replaced, not stacked; the replay count is carried over.
    kept: Headers = [(n, v or b"") for n, v in original if not n.startswith(PREFIX)]
    rejection = dead.rejection
    reason: Headers = [
        (PREFIX + "error.class", b"poison"),
        (PREFIX + "reason", rejection.code.encode()),
        (PREFIX + "message", rejection.message.encode()[:2000]),
        (PREFIX + "stage", rejection.stage.encode()),
        (PREFIX + "source.topic", source.topic.encode()),
        (PREFIX + "source.partition", str(source.partition).encode()),
        (PREFIX + "source.offset", str(source.offset).encode()),
        (PREFIX + "source.timestamp", str(timestamp_ms).encode()),
        (PREFIX + "group", group.encode()),
        (PREFIX + "sink.version", version.encode()),
        (PREFIX + "failed.at", now.astimezone(UTC).isoformat(timespec="milliseconds").encode()),
        (REPLAY_COUNT, str(replay_count(original)).encode()),
    ]
    if rejection.field:
        reason.append((PREFIX + "field", rejection.field.encode()))
    if context and rejection.exception is not None:
        reason.append((PREFIX + "exception.class", rejection.exception.encode()))
        reason.append((PREFIX + "exception.stacktrace", (rejection.trace or "").encode()))
    return DeadLetterRecord(dead_letter_topic(topic_pattern, source.topic), key, value, kept + reason)
