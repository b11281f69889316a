"""The sink's dead letters: built with their reason and provenance, produced, counted and logged."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from mds_sink import __version__, metrics
from mds_sink.config.settings import Settings
from mds_sink.core import deadletter
from mds_sink.core.batcher import DeadLetter
from mds_sink.errors import StoppedOnBadRecord
from mds_sink.kafka.clients import DeadLetterProducer

log = logging.getLogger(__name__)

# How long a flush waits for the broker to acknowledge its dead letters before it counts as failed.
ACK_TIMEOUT_S = 30.0


class DeadLetters:
    def __init__(
        self, producer: DeadLetterProducer, settings: Settings, *, base_topic: Callable[[str], str] | None = None
    ) -> None:
        self._producer = producer
        self._settings = settings
        # Tenant-scoped topics: the dead letters of `mds.<T>.bars` go to the dead-letter topic of `mds.bars`.
        self._base_topic = base_topic

    def send(self, dead: Sequence[DeadLetter]) -> None:
        """Produce and wait for the broker's acknowledgement (on the flush thread); raises if not acknowledged.
        With errors.tolerance `stop`, raises StoppedOnBadRecord instead, before anything is produced."""
        if dead and self._settings.errors.tolerance == "stop":
            first = dead[0].source
            more = f" (and {len(dead) - 1} more in the batch)" if len(dead) > 1 else ""
            raise StoppedOnBadRecord(
                f"{first.topic}[{first.partition}] offset {first.offset}: {dead[0].rejection.describe()}{more}; "
                "errors.tolerance is stop: nothing of the batch was committed"
            )
        now = datetime.now(UTC)
        records = [
            deadletter.build(
                d,
                topic_pattern=self._pattern(d.source.topic),
                group=self._settings.kafka.group_id,
                version=__version__,
                now=now,
                context=self._settings.errors.context_headers,
            )
            for d in dead
        ]
        self._producer.send(records, timeout_s=ACK_TIMEOUT_S)
        for d in dead:
            # Decode and validate rejections were reported when read; the database's only now.
            if d.rejection.stage == "write":
                rejected(d)

    def _pattern(self, topic: str) -> str:
        pattern = self._settings.topics.dead_letter
        return pattern if self._base_topic is None else pattern.replace("{topic}", self._base_topic(topic))


def rejected(d: DeadLetter) -> None:
    """Count and log a record that goes to the dead-letter topic."""
    metrics.DEAD_LETTERS.labels(d.source.topic, d.rejection.stage, d.rejection.code).inc()
    log.warning(
        "dead letter: %s",
        d.rejection.describe(),
        extra={
            "topic": d.source.topic,
            "partition": d.source.partition,
            "offset": d.source.offset,
            "reason": d.rejection.code,
            "stage": d.rejection.stage,
        },
    )
