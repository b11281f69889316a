"""PostgreSQL intervals as policy settings: parsed, compared and printed without a database (pure).

Settings say "6 months", "1 day 12 hours", "2 weeks"; TimescaleDB reports "6 mons", "7 days",
"00:05:00". Both parse to one `Interval`, compared the way PostgreSQL compares intervals
(a month is 30 days, a day 24 hours), so `admin policies apply` can tell what changed.
"""

from __future__ import annotations

import re

_UNITS_US = {
    "microsecond": 1,
    "millisecond": 1_000,
    "second": 1_000_000,
    "minute": 60_000_000,
    "hour": 3_600_000_000,
    "day": 86_400_000_000,
    "week": 7 * 86_400_000_000,
}
_UNIT_MONTHS = {"month": 1, "year": 12}
_ALIASES = {"mon": "month", "mons": "month", "min": "minute", "mins": "minute", "sec": "second", "secs": "second"}
_TOKEN = re.compile(r"(\d+)\s*([a-z]+)|(\d+):(\d{2}):(\d{2})(?:\.(\d{1,6}))?")
_US_PER_MONTH = 30 * 86_400_000_000  # PostgreSQL's own convention when comparing intervals


class Interval:
    """A non-negative interval: whole months plus microseconds (days folded in as 24 hours).

    A plain class, not a dataclass: pydantic-settings JSON-decodes environment values of dataclass
    fields, and "6 months" is not JSON.
    """

    __slots__ = ("micros", "months")

    def __init__(self, months: int, micros: int) -> None:
        self.months = months
        self.micros = micros

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Interval) and (self.months, self.micros) == (other.months, other.micros)

    def __hash__(self) -> int:
        return hash((self.months, self.micros))

    def __repr__(self) -> str:
        return f"Interval({self.sql!r})"

    @property
    def key(self) -> int:
        """Equal keys mean PostgreSQL's `=` holds between the two intervals."""
        return self.months * _US_PER_MONTH + self.micros

    @property
    def sql(self) -> str:
        """A literal for `interval '...'`: only digits and unit words, safe to inline."""
        parts: list[str] = []
        years, months = divmod(self.months, 12)
        rest = self.micros
        for count, unit in ((years, "year"), (months, "month")):
            if count:
                parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
        for unit in ("day", "hour", "minute", "second", "microsecond"):
            count, rest = divmod(rest, _UNITS_US[unit])
            if count:
                parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
        return " ".join(parts) or "0 seconds"

    def __str__(self) -> str:
        return self.sql


def _unit(word: str) -> str:
    word = _ALIASES.get(word, word)
    return word[:-1] if word.endswith("s") and word[:-1] in {*_UNITS_US, *_UNIT_MONTHS} else word


def parse_interval(text: str) -> Interval:
    """Parse "6 months", "1 day 12 hours", "2 weeks", or PostgreSQL's output ("6 mons", "00:05:00")."""
    source = text.strip().lower()
    if not source:
        raise ValueError("empty interval")
    months = micros = 0
    at = 0
    for match in _TOKEN.finditer(source):
        if source[at : match.start()].strip():
            break
        at = match.end()
        if match.group(1) is not None:
            count, unit = int(match.group(1)), _unit(match.group(2))
            if unit in _UNIT_MONTHS:
                months += count * _UNIT_MONTHS[unit]
            elif unit in _UNITS_US:
                micros += count * _UNITS_US[unit]
            else:
                raise ValueError(f"unknown unit {match.group(2)!r} in interval {text!r}")
        else:
            hours, minutes, seconds = int(match.group(3)), int(match.group(4)), int(match.group(5))
            fraction = int((match.group(6) or "0").ljust(6, "0"))
            micros += ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + fraction
    if source[at:].strip() or at == 0:
        raise ValueError(f"expected an interval such as '6 months' or '1 day 12 hours', got {text!r}")
    return Interval(months, micros)
