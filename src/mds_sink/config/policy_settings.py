"""Settings group `policies`: chunking, compression, retention and aggregates per table (no I/O).

`MDS_SINK_POLICIES__BARS_MINUTE__KEEP="3 months"` or, in the TOML file, `[policies.bars_minute]`
`keep = "3 months"`. "never" switches compression or retention off for a table.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator, model_validator

from mds_sink.core.intervals import Interval, parse_interval

_OFF = frozenset({"never", "forever", "off", "none"})

# Dumped as the text it was given in ("6 months"), so a dump loads back as the same settings.
IntervalSetting = Annotated[Interval, PlainSerializer(lambda i: i.sql, return_type=str)]


def _interval(value: Any) -> Interval | None:
    if value is None or isinstance(value, Interval):
        return value
    if isinstance(value, str):
        if value.strip().lower() in _OFF:
            return None
        return parse_interval(value)
    raise ValueError("expected an interval such as '6 months' or 'never'")


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class TablePolicy(_Group):
    """One hypertable: chunk size, when chunks are compressed, how long rows are kept."""

    chunk_interval: IntervalSetting
    compress_after: IntervalSetting | None = None
    keep: IntervalSetting | None = None

    @field_validator("chunk_interval", "compress_after", "keep", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Interval | None:
        return _interval(v)

    @field_validator("chunk_interval")
    @classmethod
    def _chunk(cls, v: Interval | None) -> Interval:
        if v is None or v.key <= 0:
            raise ValueError("a chunk interval is required and must be positive")
        if v.months:
            raise ValueError("chunk intervals are fixed lengths: use days, not months or years")
        return v


class RefreshPolicy(_Group):
    """A continuous aggregate's refresh policy: the window [now - start_offset, now - end_offset)."""

    start_offset: IntervalSetting
    end_offset: IntervalSetting
    schedule_interval: IntervalSetting

    @field_validator("start_offset", "end_offset", "schedule_interval", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Interval:
        parsed = _interval(v)
        if parsed is None:
            raise ValueError("required")
        return parsed

    @model_validator(mode="after")
    def _window(self) -> RefreshPolicy:
        if self.start_offset.key <= self.end_offset.key:
            raise ValueError("start_offset must be longer than end_offset")
        return self


def _merged(defaults: dict[str, dict[str, Any]], data: Any) -> Any:
    """Overriding one field of a nested group keeps the group's other defaults.

    pydantic-settings hands `MDS_SINK_POLICIES__BARS_MINUTE__KEEP` over as {"bars_minute": {"keep": ...}};
    without this, the table's chunk interval would be missing instead of defaulted.
    """
    if not isinstance(data, dict):
        return data
    return {k: ({**defaults[k], **v} if k in defaults and isinstance(v, dict) else v) for k, v in data.items()}


_REFRESH_DEFAULTS: dict[str, dict[str, Any]] = {
    "bars_5m": {"start_offset": "2 days", "end_offset": "5 minutes", "schedule_interval": "5 minutes"},
    "bars_1h": {"start_offset": "7 days", "end_offset": "1 hour", "schedule_interval": "30 minutes"},
    "bars_1d": {"start_offset": "30 days", "end_offset": "1 day", "schedule_interval": "1 hour"},
}


class AggregateSettings(_Group):
    """Continuous aggregates 5m, 1h and 1d built from the 1m bars of bars_minute."""

    enabled: bool = True
    bars_5m: RefreshPolicy = RefreshPolicy.model_validate(_REFRESH_DEFAULTS["bars_5m"])
    bars_1h: RefreshPolicy = RefreshPolicy.model_validate(_REFRESH_DEFAULTS["bars_1h"])
    bars_1d: RefreshPolicy = RefreshPolicy.model_validate(_REFRESH_DEFAULTS["bars_1d"])

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return _merged(_REFRESH_DEFAULTS, data)

    def refresh(self) -> dict[str, RefreshPolicy]:
        return {"bars_5m": self.bars_5m, "bars_1h": self.bars_1h, "bars_1d": self.bars_1d}


# The seeds' defaults; chunk intervals match what migration 0001 creates.
_TABLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "bars_minute": {"chunk_interval": "1 day", "compress_after": "1 day", "keep": "6 months"},
    "bars_hour": {"chunk_interval": "7 days", "compress_after": "7 days", "keep": "2 years"},
    "bars_day": {"chunk_interval": "30 days", "compress_after": "30 days", "keep": "10 years"},
    "quotes": {"chunk_interval": "1 day", "compress_after": None, "keep": "14 days"},
    "fundamentals": {"chunk_interval": "365 days"},
    "news": {"chunk_interval": "30 days"},
    "option_snapshots": {"chunk_interval": "1 day"},
}


def _table(name: str) -> TablePolicy:
    return TablePolicy.model_validate(_TABLE_DEFAULTS[name])


class PolicySettings(_Group):
    """Per time-series table; bars by timeframe class (minute bars are many and short-lived)."""

    bars_minute: TablePolicy = _table("bars_minute")
    bars_hour: TablePolicy = _table("bars_hour")
    bars_day: TablePolicy = _table("bars_day")
    quotes: TablePolicy = _table("quotes")
    fundamentals: TablePolicy = _table("fundamentals")
    news: TablePolicy = _table("news")
    option_snapshots: TablePolicy = _table("option_snapshots")
    aggregates: AggregateSettings = AggregateSettings()
    retention_batch_rows: int = Field(
        default=10_000, ge=1, description="Rows per DELETE when retention runs without TimescaleDB."
    )
    lock_timeout_s: float = Field(
        default=30.0, gt=0, description="How long `admin policies apply` waits for a table lock the sink holds."
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return _merged(_TABLE_DEFAULTS, data)

    def tables(self) -> dict[str, TablePolicy]:
        return {name: getattr(self, name) for name in _TABLE_DEFAULTS}
