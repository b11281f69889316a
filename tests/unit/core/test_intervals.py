from __future__ import annotations

import pytest

from mds_sink.core.intervals import Interval, parse_interval

DAY_US = 86_400_000_000


@pytest.mark.parametrize(
    ("text", "months", "micros"),
    [
        ("6 months", 6, 0),
        ("6 mons", 6, 0),
        ("1 mon", 1, 0),
        ("2 years", 24, 0),
        ("1 year 2 mons 3 days", 14, 3 * DAY_US),
        ("14 days", 0, 14 * DAY_US),
        ("1 day 12 hours", 0, 36 * 3_600_000_000),
        ("2 weeks", 0, 14 * DAY_US),
        ("00:05:00", 0, 300_000_000),
        ("1 day 01:00:00.5", 0, DAY_US + 3_600_500_000),
        ("90 minutes", 0, 5_400_000_000),
        (" 30 Secs ", 0, 30_000_000),
    ],
)
def test_parses_settings_and_postgresql_output(text: str, months: int, micros: int) -> None:
    assert parse_interval(text) == Interval(months, micros)


@pytest.mark.parametrize("text", ["", "six months", "6 fortnights", "6 months and a day", "5", "-1 day"])
def test_rejects_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError):
        parse_interval(text)


def test_compares_as_postgresql_does() -> None:
    # interval '1 month' = interval '30 days' in PostgreSQL, and TimescaleDB reports "6 mons".
    assert parse_interval("1 month").key == parse_interval("30 days").key
    assert parse_interval("6 mons").key == parse_interval("6 months").key
    assert parse_interval("7 days").key == parse_interval("1 week").key
    assert parse_interval("1 day").key != parse_interval("23 hours").key


@pytest.mark.parametrize(
    ("text", "sql"),
    [
        ("6 mons", "6 months"),
        ("24 months", "2 years"),
        ("1 day", "1 day"),
        ("36 hours", "1 day 12 hours"),
        ("00:05:00", "5 minutes"),
        ("0 seconds", "0 seconds"),
    ],
)
def test_prints_a_literal_that_reads_back_the_same(text: str, sql: str) -> None:
    parsed = parse_interval(text)
    assert parsed.sql == str(parsed) == sql
    assert parse_interval(parsed.sql) == parsed
