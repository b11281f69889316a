"""Settings of bar continuity (`continuity.*`): which exchange calendar a series trades on, how long a
gap may stay open before a backfill is requested, and the symbol tiers the gap SLO is reported by."""

from __future__ import annotations

import re
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mds_sink.core import continuity

Timeframe = Literal["1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"]
BAR_TIMEFRAMES: tuple[Timeframe, ...] = ("1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w")
_PATTERN = re.compile(r"^[A-Za-z0-9._:/^*?\[\]!-]{1,64}$")


class CalendarRule(BaseModel):
    """Series matching every given field trade on `calendar`; the first matching rule wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calendar: str = Field(description="An exchange_calendars name: XNYS, XLON, XTKS, XASX, CMES, 24/7, ...")
    tenant: str | None = Field(default=None, description="A tenant id; any tenant if not given.")
    vendor: str | None = Field(default=None, description="A vendor, or a glob such as 'binance*'.")
    symbol: str | None = Field(default=None, description="A symbol, or a glob such as '*.T' or 'BTC-*'.")

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"not a tenant id (a UUID): {value!r}") from None

    @field_validator("vendor", "symbol")
    @classmethod
    def _glob(cls, value: str | None) -> str | None:
        if value is not None and not _PATTERN.match(value):
            raise ValueError(f"not a name or glob pattern: {value!r}")
        return value


class ContinuitySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True,
        description="Detect missing bars in trading sessions, keep them in bar_gaps and request their backfill.",
    )
    calendar: str = Field(default="XNYS", description="The calendar of series no rule in `calendars` matches.")
    calendars: tuple[CalendarRule, ...] = Field(
        default=(), description="Calendar rules by tenant, vendor and symbol pattern, first match wins."
    )
    timeframes: tuple[Timeframe, ...] = Field(
        default=BAR_TIMEFRAMES, description="The bar timeframes whose continuity is watched."
    )
    grace_s: float = Field(
        default=900.0,
        ge=0,
        description=(
            "How long a gap may stay open (its bars late, or on their way from a replay) before one backfill "
            "job is requested for it."
        ),
    )
    check_every_s: float = Field(
        default=10.0, gt=0, le=3600, description="How often open gaps are re-counted and due backfills requested."
    )
    job_type: str = Field(default="backfill_bars", min_length=1, max_length=100)
    job_priority: int = Field(default=0, ge=-100, le=100)
    tiers: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description=(
            "Symbol tiers of the gap SLO: tier name -> symbol globs, first tier in order that matches wins; "
            "e.g. {t0 = ['AAPL', 'MSFT'], t1 = ['*']}. Unmatched symbols are in `default_tier`."
        ),
    )
    default_tier: str = Field(default="default", min_length=1, max_length=40)
    max_series: int = Field(
        default=200_000,
        ge=100,
        description="Series kept in memory (the last bar and open gaps of each); the least recent go first.",
    )

    @field_validator("calendar")
    @classmethod
    def _calendar(cls, value: str) -> str:
        if not value or len(value) > 40:
            raise ValueError("an exchange_calendars name is required, such as XNYS")
        return value

    @model_validator(mode="after")
    def _tier_names(self) -> ContinuitySettings:
        for tier, patterns in self.tiers.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", tier):
                raise ValueError(f"tier name {tier!r}: letters, digits, '_' and '-' only")
            for pattern in patterns:
                if not _PATTERN.match(pattern):
                    raise ValueError(f"tier {tier}: not a symbol or glob pattern: {pattern!r}")
        return self

    def rules(self) -> continuity.Rules:
        """The detection's rules: the calendar rules in order, then the default calendar for every series."""
        calendars = [
            continuity.CalendarRule(r.calendar, f"continuity.calendars[{i}].calendar", r.tenant, r.vendor, r.symbol)
            for i, r in enumerate(self.calendars)
        ]
        calendars.append(continuity.CalendarRule(self.calendar, "continuity.calendar"))
        return continuity.Rules(calendars, timeframes=self.timeframes, tiers=self.tiers, default_tier=self.default_tier)
