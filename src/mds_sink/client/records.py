"""Typed records of the six data types, field for field their Avro schemas (schemas/*.avsc).

Timestamps are `datetime` (naive means UTC) or integer microseconds, dates are `date` or integer
days: the encoder (produce.py) converts them as it does NDJSON's ISO strings.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, ClassVar

Moment = datetime | int
Day = date | int
TenantId = str | uuid.UUID


def _fields(record: Any) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Bar:
    table: ClassVar[str] = "bars"
    tenant_id: TenantId
    vendor: str
    symbol: str
    timeframe: str
    ts: Moment
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None = None
    trade_count: int | None = None
    revision: int = 0

    def fields(self) -> dict[str, Any]:
        return _fields(self)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Quote:
    table: ClassVar[str] = "quotes"
    tenant_id: TenantId
    vendor: str
    symbol: str
    ts: Moment
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    exchange: str | None = None
    revision: int = 0

    def fields(self) -> dict[str, Any]:
        return _fields(self)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Fundamentals:
    table: ClassVar[str] = "fundamentals"
    tenant_id: TenantId
    vendor: str
    symbol: str
    as_of: Day
    period: str = "FY"
    currency: str = "USD"
    total_assets: float | None = None
    total_liabilities: float | None = None
    revenue: float | None = None
    net_income: float | None = None
    eps: float | None = None
    shares_outstanding: float | None = None
    revision: int = 0

    def fields(self) -> dict[str, Any]:
        return _fields(self)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class News:
    table: ClassVar[str] = "news"
    tenant_id: TenantId
    vendor: str
    published_at: Moment
    title: str
    id: str | None = None  # None: the sink derives one from vendor, time, title and url
    symbol: str | None = None
    url: str | None = None
    summary: str | None = None
    sentiment_score: float | None = None

    def fields(self) -> dict[str, Any]:
        return _fields(self)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OptionSnapshot:
    table: ClassVar[str] = "option_snapshots"
    tenant_id: TenantId
    vendor: str
    underlying: str
    expiry: Day
    option_type: str  # C or P
    strike: float
    ts: Moment
    iv: float | None = None
    delta: float | None = None
    gamma: float | None = None
    theta: float | None = None
    vega: float | None = None
    open_interest: int | None = None
    volume: int | None = None
    spot: float | None = None
    bid: float | None = None
    ask: float | None = None

    def fields(self) -> dict[str, Any]:
        return _fields(self)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JobRequest:
    table: ClassVar[str] = "jobs"
    tenant_id: TenantId
    idempotency_key: str
    job_type: str
    requested_at: Moment
    payload: dict[str, Any] = dataclasses.field(default_factory=dict)
    priority: int = 0
    requested_by: str | None = None

    def fields(self) -> dict[str, Any]:
        return _fields(self)


@dataclasses.dataclass(frozen=True, slots=True)
class Fields:
    """A record of any type as its fields, the way NDJSON gives them (`table`: bars, quotes, ...); checked
    and encoded exactly as the typed records are."""

    table: str
    values: Mapping[str, Any]

    def fields(self) -> dict[str, Any]:
        return dict(self.values)


Record = Bar | Quote | Fundamentals | News | OptionSnapshot | JobRequest
Publishable = Record | Fields
RECORD_TYPES: tuple[type[Record], ...] = (Bar, Quote, Fundamentals, News, OptionSnapshot, JobRequest)
