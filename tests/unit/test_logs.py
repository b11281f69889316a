"""Log formats: one JSON object per line with the record's coordinates, or a readable console line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from mds_sink.logs import ConsoleFormatter, JsonFormatter


def record(msg: str, *args: object, level: int = logging.WARNING, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("mds_sink.sink.worker", level, __file__, 1, msg, args, None)
    made.__dict__.update(extra)
    return made


def test_json_line_carries_level_logger_message_and_record_coordinates() -> None:
    line = JsonFormatter().format(
        record("dead letter: %s", "validate/unknown_tenant", topic="mds.bars", partition=2, offset=41, reason="x")
    )
    out = json.loads(line)
    assert out["level"] == "warning"
    assert out["logger"] == "mds_sink.sink.worker"
    assert out["msg"] == "dead letter: validate/unknown_tenant"
    assert (out["topic"], out["partition"], out["offset"], out["reason"]) == ("mds.bars", 2, 41, "x")
    assert datetime.fromisoformat(out["ts"]).utcoffset() is not None


def test_json_line_omits_coordinates_a_line_does_not_have() -> None:
    out = json.loads(JsonFormatter().format(record("consuming %d topics", 3, level=logging.INFO)))
    assert set(out) == {"ts", "level", "logger", "msg"}
    assert out["msg"] == "consuming 3 topics"


def test_json_stays_one_line_whatever_the_message_or_values() -> None:
    line = JsonFormatter().format(record('bad "value"\nsecond line', topic="t", offset=Path("/x")))
    assert "\n" not in line
    out = json.loads(line)
    assert out["msg"] == 'bad "value"\nsecond line'
    assert out["offset"] == "/x"  # not JSON-serialisable: shown as text rather than failing the log call


def test_json_line_includes_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = logging.LogRecord("mds_sink", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    out = json.loads(JsonFormatter().format(made))
    assert "ValueError: boom" in out["exc"]


def test_console_line_appends_the_coordinates() -> None:
    line = ConsoleFormatter().format(record("dead letter", topic="mds.bars", partition=0, offset=7))
    assert "WARNING" in line and "mds_sink.sink.worker: dead letter" in line
    assert line.endswith("[topic=mds.bars partition=0 offset=7]")
