"""`mds-sink produce`: NDJSON (plain, .gz, or stdin) through the client library's Publisher.

Each line is one JSON object with the fields of the type's schema (encoder.py says how timestamps and
dates may be written). Every line is checked as the sink checks it before it is sent; a bad line is
reported with its number and skipped, the rest are sent and acknowledged.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mds_sink.client.encoder import RecordEncoder, encoder_for, table_for
from mds_sink.client.errors import NotAcknowledged, PermanentPublishError
from mds_sink.client.publisher import Publisher
from mds_sink.client.records import Fields
from mds_sink.config.settings import Settings
from mds_sink.core.tables import TableSpec
from mds_sink.errors import BrokerUnavailable, InputError, LineError

__all__ = ["Published", "RecordEncoder", "count_lines", "encoder_for", "open_lines", "publish", "table_for"]


def open_lines(path: str) -> TextIO:
    if path == "-":
        return sys.stdin
    p = Path(path)
    if p.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8")
    return p.open(encoding="utf-8")


def count_lines(path: str) -> int | None:
    """Lines of a file, for an ETA; None for stdin or input that cannot be read through (reported later)."""
    if path == "-":
        return None
    try:
        with open_lines(path) as lines:
            return sum(1 for line in lines if line.strip())
    except (OSError, EOFError, UnicodeDecodeError, zlib.error):
        return None


def _read(lines: TextIO) -> Iterator[tuple[int, str]]:
    """Numbered lines; input that is not text (binary, a .gz that is not gzip) stops with one clear line."""
    n = 0
    it = iter(lines)
    while True:
        try:
            line = next(it)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise InputError(f"line {n + 1}: not UTF-8 text (byte {exc.object[exc.start]:#04x})") from None
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise InputError(f"line {n + 1}: not a readable gzip stream ({exc})") from None
        n += 1
        yield n, line


@dataclass(frozen=True, slots=True)
class Published:
    topic: str
    sent: int
    bad_lines: list[LineError]


def _with_topic(settings: Settings, spec: TableSpec, topic: str) -> Settings:
    topics = settings.topics.model_copy(update={spec.name: topic})
    return settings.model_copy(update={"topics": topics})


def publish(
    settings: Settings,
    spec: TableSpec,
    lines: TextIO,
    *,
    topic: str | None = None,
    schemas_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> Published:
    """Check, encode and produce every good line; waits for the broker to acknowledge all of them.
    `progress` is told of each line read. Input that stops being readable raises InputError once what
    came before it is acknowledged."""
    if topic:
        settings = _with_topic(settings, spec, topic)
    target: str = getattr(settings.topics, spec.name)
    sent = 0
    bad: list[LineError] = []
    unreadable: InputError | None = None
    publisher = Publisher(settings, schemas_dir=schemas_dir)
    # Lines go out in batches (one producer call and one confirmation each); a bad line raises at add.
    batch = publisher.batched(max_rows=1_000, max_ms=100)
    try:
        try:
            for n, line in _read(lines):
                if not line.strip():
                    continue
                if progress is not None:
                    progress(1)
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    bad.append(LineError(n, str(exc)))
                    continue
                if not isinstance(obj, dict):
                    bad.append(LineError(n, "expected a JSON object"))
                    continue
                try:
                    batch.add(Fields(spec.name, obj))
                except PermanentPublishError as exc:  # the line names the record: the reason is enough
                    bad.append(LineError(n, exc.reason))
                    continue
                sent += 1
        except InputError as exc:
            unreadable = exc  # what was produced before it is still acknowledged (or reported) below
    finally:
        try:
            try:
                batch.close()
            finally:
                publisher.close()
        except NotAcknowledged as exc:
            raise BrokerUnavailable(
                f"{len(exc.failures)} of {sent} records to {target} not acknowledged ({exc.failures[0].reason})"
            ) from None
    if unreadable is not None:
        raise InputError(f"{unreadable}; the {sent} records before it were produced to {target}")
    return Published(target, sent, bad)
