"""`mds-sink produce`: NDJSON (plain, .gz, or stdin) to Avro records in the sink's wire format.

Each line is one JSON object with the fields of the type's schema. Timestamps are ISO 8601 strings
(UTC if no offset is given) or integer microseconds; dates are `YYYY-MM-DD`. Records are keyed by
tenant/vendor/symbol so that one symbol stays ordered within a partition.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

import fastavro
from confluent_kafka import Producer

from mds_sink.avro.codec import AvroSchema, encode, load_schema_file, local_schema_id, strip_logical_types
from mds_sink.config.settings import Settings
from mds_sink.core.catalog import CATALOG, TABLES
from mds_sink.core.tables import TableSpec
from mds_sink.errors import BrokerUnavailable, InputError, LineError
from mds_sink.kafka.clients import producer_config


def table_for(kind: str) -> TableSpec:
    """Accepts a table name (bars) or a record name (bar, option_snapshot)."""
    for spec in TABLES.values():
        if kind in (spec.name, spec.record):
            return spec
    names = ", ".join(sorted({s.record for s in TABLES.values()}))
    raise ValueError(f"unknown type {kind!r}: expected one of {names}")


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


def _us(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _timestamp_us(value: Any, name: str) -> int:
    if isinstance(value, datetime):
        return _us(value)
    if isinstance(value, bool):
        raise ValueError(f"field {name!r}: expected an ISO 8601 timestamp or integer microseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"field {name!r}: {value!r} is not an ISO 8601 timestamp") from None
        return _us(parsed)
    raise ValueError(f"field {name!r}: expected an ISO 8601 timestamp or integer microseconds")


def _days(value: Any, name: str) -> int:
    if isinstance(value, date) and not isinstance(value, datetime):
        return (value - date(1970, 1, 1)).days
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return (date.fromisoformat(value) - date(1970, 1, 1)).days
        except ValueError:
            raise ValueError(f"field {name!r}: {value!r} is not a YYYY-MM-DD date") from None
    raise ValueError(f"field {name!r}: expected a YYYY-MM-DD date")


@dataclass
class RecordEncoder:
    """Turns JSON objects into framed Avro values for one record type."""

    spec: TableSpec
    schema: AvroSchema
    schema_id: int
    _parsed: Any = None
    _converters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._parsed = fastavro.parse_schema(strip_logical_types(self.schema))
        for f in self.schema["fields"]:
            logical = f["type"].get("logicalType") if isinstance(f["type"], dict) else None
            if logical == "timestamp-micros":
                self._converters[f["name"]] = _timestamp_us
            elif logical == "date":
                self._converters[f["name"]] = _days
        self._fields = {f["name"] for f in self.schema["fields"]}
        self._defaults = {f["name"]: f["default"] for f in self.schema["fields"] if "default" in f}

    def key(self, obj: dict[str, Any]) -> bytes:
        return "|".join(str(obj.get(k, "")) for k in CATALOG[self.spec.name].key_fields).encode()

    def encode(self, obj: Any) -> bytes:
        return self.frame(self.record(obj))

    def record(self, obj: Any) -> dict[str, Any]:
        """The record as the Avro writer (and the sink's decoder) sees it: timestamps in microseconds,
        dates in days, a job's payload as JSON text, tenant ids as text."""
        if not isinstance(obj, dict):
            raise ValueError("expected a JSON object")
        unknown = sorted(set(obj) - self._fields)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)} for {self.schema['name']}")
        record = {
            k: (self._converters[k](v, k) if k in self._converters and v is not None else v) for k, v in obj.items()
        }
        if self.spec.name == "jobs" and isinstance(record.get("payload"), dict):
            record["payload"] = json.dumps(record["payload"])
        if isinstance(record.get("tenant_id"), uuid.UUID):
            record["tenant_id"] = str(record["tenant_id"])
        return record

    def with_defaults(self, record: dict[str, Any]) -> dict[str, Any]:
        """`record` with the schema's defaults for the fields it leaves out, as the sink decodes it."""
        missing = {k: v for k, v in self._defaults.items() if k not in record}
        return {**missing, **record} if missing else record

    def frame(self, record: dict[str, Any]) -> bytes:
        try:
            return encode(self._parsed, self.schema_id, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"does not match {self.schema['name']}: {exc}") from None


def encoder_for(spec: TableSpec, schemas_dir: Path, schema_id: int | None = None) -> RecordEncoder:
    schema = load_schema_file(schemas_dir / f"{spec.record}.avsc")
    return RecordEncoder(spec, schema, local_schema_id(schema) if schema_id is None else schema_id)


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


def encoded_lines(lines: TextIO, encoder: RecordEncoder) -> Iterator[tuple[bytes, bytes] | LineError]:
    for n, line in _read(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            value = encoder.encode(obj)  # first: it refuses anything but a JSON object
            yield encoder.key(obj), value
        except ValueError as exc:
            yield LineError(n, str(exc))


@dataclass(frozen=True, slots=True)
class Published:
    topic: str
    sent: int
    bad_lines: list[LineError]


def publish(
    settings: Settings,
    spec: TableSpec,
    lines: TextIO,
    *,
    topic: str | None = None,
    schemas_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> Published:
    """Encode and produce every good line; waits for the broker to acknowledge all of them. `progress` is
    told of each line read. Input that stops being readable raises InputError once what came before it
    is acknowledged."""
    target = topic or getattr(settings.topics, spec.name)
    schema_id = None
    if settings.kafka.schema_registry_url:
        from mds_sink.avro.registry import register_value_schema  # noqa: PLC0415

        schema_id = register_value_schema(
            settings.kafka.schema_registry_url, target, schemas_dir / f"{spec.record}.avsc"
        )
    encoder = encoder_for(spec, schemas_dir, schema_id)
    producer = Producer(producer_config(settings))
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    sent = 0
    bad: list[LineError] = []
    unreadable: InputError | None = None
    try:
        for item in encoded_lines(lines, encoder):
            if progress is not None:
                progress(1)
            if isinstance(item, LineError):
                bad.append(item)
                continue
            key, value = item
            while True:
                try:
                    producer.produce(target, value=value, key=key, on_delivery=delivered)
                    break
                except BufferError:  # local queue full: serve delivery reports to make room
                    producer.poll(0.1)
            producer.poll(0)
            sent += 1
    except InputError as exc:
        unreadable = exc  # what was produced before it is still acknowledged (or reported) below
    remaining = producer.flush(60)
    if remaining or failed:
        raise BrokerUnavailable(
            f"{remaining + len(failed)} of {sent} records to {target} not acknowledged "
            f"({failed[0] if failed else 'timeout'})"
        )
    if unreadable is not None:
        raise InputError(f"{unreadable}; the {sent} records before it were produced to {target}")
    return Published(target, sent, bad)
