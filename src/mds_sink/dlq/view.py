"""Dead letters as operators see them: parsed headers, filters, counts (pure; no I/O here)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mds_sink.core.deadletter import PREFIX, REPLAY_COUNT


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    record: dict[str, Any] | None = None  # the value decoded with the current schemas, when it decodes

    def header(self, name: str, default: str = "") -> str:
        for n, v in self.headers:
            if n == name:
                return v.decode("utf-8", "replace")
        return default

    @property
    def reason(self) -> str:
        return self.header(PREFIX + "reason", "unknown")

    @property
    def stage(self) -> str:
        return self.header(PREFIX + "stage")

    @property
    def source_topic(self) -> str:
        return self.header(PREFIX + "source.topic")

    @property
    def source_partition(self) -> int:
        return int(self.header(PREFIX + "source.partition", "-1"))

    @property
    def source_offset(self) -> int:
        return int(self.header(PREFIX + "source.offset", "-1"))

    @property
    def failed_at(self) -> datetime | None:
        text = self.header(PREFIX + "failed.at")
        try:
            return datetime.fromisoformat(text) if text else None
        except ValueError:
            return None

    @property
    def replay_count(self) -> int:
        try:
            return int(self.header(REPLAY_COUNT, "0"))
        except ValueError:
            return 0

    @property
    def tenant(self) -> str | None:
        """From the decoded record, else from the key (producers key by tenant|vendor|symbol)."""
        if self.record is not None and isinstance(self.record.get("tenant_id"), str):
            return str(self.record["tenant_id"]).lower()
        if self.key:
            return self.key.split(b"|", 1)[0].decode("utf-8", "replace").lower() or None
        return None

    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(n, v) for n, v in self.headers if not n.startswith(PREFIX)]

    def as_json(self) -> dict[str, Any]:
        return {
            "dlq": {"topic": self.dlq_topic, "partition": self.dlq_partition, "offset": self.dlq_offset},
            "reason": self.reason,
            "stage": self.stage,
            "message": self.header(PREFIX + "message"),
            "field": self.header(PREFIX + "field") or None,
            "source": {"topic": self.source_topic, "partition": self.source_partition, "offset": self.source_offset},
            "failed_at": self.header(PREFIX + "failed.at"),
            "replay_count": self.replay_count,
            "tenant": self.tenant,
            "key": None if self.key is None else self.key.decode("utf-8", "replace"),
            "record": self.record,
            "value_base64": None
            if self.value is None or self.record is not None
            else base64.b64encode(self.value).decode(),
            "headers": {n: v.decode("utf-8", "replace") for n, v in self.headers},
        }


@dataclass(frozen=True, slots=True)
class Filters:
    reasons: frozenset[str] = frozenset()
    topics: frozenset[str] = frozenset()  # source topics
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_offset: int | None = None  # source offsets
    max_offset: int | None = None

    def matches(self, d: DeadLetterView) -> bool:
        if self.reasons and d.reason not in self.reasons:
            return False
        if self.topics and d.source_topic not in self.topics:
            return False
        if self.tenant is not None and d.tenant != self.tenant.lower():
            return False
        at = d.failed_at
        if (self.since is not None or self.until is not None) and at is None:
            return False
        if self.since is not None and at is not None and at < self.since:
            return False
        if self.until is not None and at is not None and at >= self.until:
            return False
        if self.min_offset is not None and d.source_offset < self.min_offset:
            return False
        return not (self.max_offset is not None and d.source_offset > self.max_offset)

    def fingerprint(self) -> str:
        """Stable id of this filter set: each set of filters replays with its own resumable position."""
        text = json.dumps(
            [
                sorted(self.reasons),
                sorted(self.topics),
                self.tenant,
                None if self.since is None else self.since.isoformat(),
                None if self.until is None else self.until.isoformat(),
                self.min_offset,
                self.max_offset,
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Stats:
    by_reason: Counter[str] = field(default_factory=Counter)
    by_topic: Counter[str] = field(default_factory=Counter)
    by_hour: Counter[str] = field(default_factory=Counter)
    total: int = 0

    def add(self, d: DeadLetterView) -> None:
        self.total += 1
        self.by_reason[f"{d.stage}/{d.reason}"] += 1
        self.by_topic[d.source_topic] += 1
        at = d.failed_at
        self.by_hour[at.strftime("%Y-%m-%dT%H:00Z") if at else "unknown"] += 1


def stats(letters: Iterable[DeadLetterView]) -> Stats:
    out = Stats()
    for d in letters:
        out.add(d)
    return out


def replay_headers(d: DeadLetterView) -> list[tuple[str, str | bytes | None]]:
    """Headers of a replayed record: the original ones plus the incremented replay count."""
    return [*d.original_headers(), (REPLAY_COUNT, str(d.replay_count + 1).encode())]
