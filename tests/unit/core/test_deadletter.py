from __future__ import annotations

from datetime import UTC, datetime

from mds_sink.core.batcher import DeadLetter, Source
from mds_sink.core.deadletter import build, replay_count
from mds_sink.core.rejection import TRACE_MAX_CHARS, TRACE_MESSAGE_CHARS, Rejection, with_context


class FakeMessage:
    """Stands in for confluent_kafka.Message (a pure unit: the broker is not involved here)."""

    def __init__(self, headers: list[tuple[str, bytes]]) -> None:
        self._headers = headers

    def key(self) -> bytes:
        return b"tenant|polygon|AAPL"

    def value(self) -> bytes:
        return b"\x01garbage"

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_763_000_000_123)


def test_dead_letter_keeps_the_original_and_adds_the_reason() -> None:
    message = FakeMessage([("traceparent", b"00-abc"), ("mds.dlq.replay.count", b"2"), ("mds.dlq.reason", b"old")])
    dead = DeadLetter(Source("mds.bars", 4, 1234, message), Rejection("decode", "bad_magic", "magic byte is 1"))
    record = build(
        dead,
        topic_pattern="{topic}.dlq",
        group="sink-a",
        version="0.1.0",
        now=datetime(2026, 11, 21, 9, 30, tzinfo=UTC),
    )
    headers = dict(record.headers)
    assert (record.topic, record.key, record.value) == ("mds.bars.dlq", b"tenant|polygon|AAPL", b"\x01garbage")
    assert headers == {
        "traceparent": b"00-abc",
        "mds.dlq.error.class": b"poison",
        "mds.dlq.reason": b"bad_magic",
        "mds.dlq.message": b"magic byte is 1",
        "mds.dlq.stage": b"decode",
        "mds.dlq.source.topic": b"mds.bars",
        "mds.dlq.source.partition": b"4",
        "mds.dlq.source.offset": b"1234",
        "mds.dlq.source.timestamp": b"1763000000123",
        "mds.dlq.group": b"sink-a",
        "mds.dlq.sink.version": b"0.1.0",
        "mds.dlq.failed.at": b"2026-11-21T09:30:00.000+00:00",
        "mds.dlq.replay.count": b"2",
    }
    assert [n for n, _ in record.headers].count("mds.dlq.reason") == 1


def test_shared_dead_letter_topic_and_field_header() -> None:
    dead = DeadLetter(Source("mds.quotes", 0, 1), Rejection("validate", "bad_price", "bid < 0", "bid"))
    record = build(dead, topic_pattern="mds.dead-letters", group="g", version="v", now=datetime.now(UTC))
    assert record.topic == "mds.dead-letters"
    assert dict(record.headers)["mds.dlq.field"] == b"bid"
    assert replay_count(record.headers) == 0


def _rejected_by(exc: BaseException) -> Rejection:
    try:
        raise exc
    except ValueError as caught:
        return with_context(Rejection("validate", "bad_price", "field 'close': not finite", "close"), caught)


def test_context_headers_carry_the_exception_class_and_a_capped_stack_trace_only_when_asked() -> None:
    dead = DeadLetter(Source("mds.bars", 0, 7, FakeMessage([])), _rejected_by(ValueError("x" * 10_000)))
    when = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    plain = dict(build(dead, topic_pattern="{topic}.dlq", group="g", version="v", now=when).headers)
    assert "mds.dlq.exception.class" not in plain and "mds.dlq.exception.stacktrace" not in plain
    full = dict(build(dead, topic_pattern="{topic}.dlq", group="g", version="v", now=when, context=True).headers)
    assert full["mds.dlq.exception.class"] == b"builtins.ValueError"
    trace = full["mds.dlq.exception.stacktrace"]
    assert isinstance(trace, bytes)
    text = trace.decode()
    assert text.startswith("Traceback (most recent call last):") and "in _rejected_by" in text
    assert text.endswith("ValueError: " + "x" * (TRACE_MESSAGE_CHARS - len("ValueError: ")) + "...\n")
    assert len(text) <= TRACE_MAX_CHARS
