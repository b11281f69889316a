"""Market-data rules: a decoded record becomes a staged row, or a rejection naming the field.

Pure: the clock (`now_us`) and the tenant set are inputs. Rows are tuples in the column order of
the table's spec (tables.py), in raw form (int microseconds, int days, text tenant ids).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mds_sink.core.rejection import invalid

Row = tuple[Any, ...]
Record = Mapping[str, Any]

TIMEFRAMES = frozenset({"1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"})
# Each value once, as one object: the rows of a series share their series columns' objects, so the
# continuity tracker's lookups (core/continuity.py) compare them by identity.
_TIMEFRAME = {timeframe: timeframe for timeframe in TIMEFRAMES}
PERIODS = frozenset({"FY", "Q1", "Q2", "Q3", "Q4", "TTM"})
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9.\-/_:^=]*$")
_IDENT = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_US_PER_DAY = 86_400_000_000
_MAX_CACHE = 100_000
_MAX_EXPIRY_DAYS = 50 * 366  # listed options expire within a few years; beyond this the field is garbage


@dataclass
class TenantSet:
    """Known tenants by canonical id (lower-case UUID text) and whether each is active."""

    active: dict[str, bool] = field(default_factory=dict)
    # Called on a miss; returns True when it reloaded `active` (a tenant added a moment ago is found).
    on_miss: Callable[[], bool] | None = None
    _canonical: dict[str, str] = field(default_factory=dict)

    def check(self, raw: Any) -> str:
        """The canonical tenant id, or a rejection: not a UUID, unknown, or disabled. Every spelling of
        an id gives the same object (see _TIMEFRAME)."""
        canonical = self._canonical.get(raw) if isinstance(raw, str) else None
        if canonical is None:
            try:
                text = str(uuid.UUID(str(raw)))
            except ValueError:
                raise invalid("bad_tenant_id", f"tenant_id {raw!r} is not a UUID", "tenant_id") from None
            canonical = text
            if isinstance(raw, str) and len(self._canonical) < _MAX_CACHE:
                canonical = self._canonical.setdefault(text, text)
                self._canonical[raw] = canonical
        state = self.active.get(canonical)
        if state is None and self.on_miss is not None and self.on_miss():
            state = self.active.get(canonical)
        if state is None:
            raise invalid("unknown_tenant", f"tenant {canonical} is not a known tenant", "tenant_id")
        if not state:
            raise invalid("inactive_tenant", f"tenant {canonical} is disabled", "tenant_id")
        return canonical


@dataclass
class Rules:
    """Everything a validator needs besides the record."""

    tenants: TenantSet
    now_us: int
    max_future_skew_us: int = 300_000_000
    symbol_max_length: int = 32
    # A crossed (bid above ask) or locked (bid equal to ask) quote: refused by default; kept as it came
    # when asked, and then it never moves latest_prices (tables.py's feed takes bid < ask only).
    keep_crossed_quotes: bool = False
    _symbols: dict[str, str] = field(default_factory=dict)
    _vendors: dict[str, str] = field(default_factory=dict)

    def vendor(self, raw: Any) -> str:
        """The vendor, one object per value (see _TIMEFRAME); a known one skips the pattern."""
        known = self._vendors.get(raw) if isinstance(raw, str) else None
        if known is not None:
            return known
        if not isinstance(raw, str) or not _IDENT.match(raw):
            raise invalid("bad_vendor", f"vendor {raw!r} must be a lower-case identifier (a-z 0-9 _ . -)", "vendor")
        if len(self._vendors) < _MAX_CACHE:
            self._vendors[raw] = raw
        return raw

    def symbol(self, raw: Any, name: str = "symbol") -> str:
        known = self._symbols.get(raw)
        if known is not None:
            return known
        if not isinstance(raw, str):
            raise invalid("bad_symbol", f"{name} must be a string", name)
        symbol = raw.strip().upper()
        if not symbol:
            raise invalid("bad_symbol", f"{name} is empty", name)
        if len(symbol) > self.symbol_max_length:
            raise invalid("bad_symbol", f"{name} {symbol[:40]!r} is longer than {self.symbol_max_length}", name)
        if not _SYMBOL.match(symbol):
            raise invalid("bad_symbol", f"{name} {symbol!r} has characters outside A-Z 0-9 . - / _ : ^ =", name)
        if len(self._symbols) < _MAX_CACHE:
            self._symbols[raw] = symbol
        return symbol

    def ts(self, value: int, name: str) -> int:
        if value < 0:
            raise invalid("ts_before_epoch", f"{name} is before 1970-01-01", name)
        if value > self.now_us + self.max_future_skew_us:
            ahead = (value - self.now_us) / 1e6
            raise invalid(
                "ts_in_future",
                f"{name} is {ahead:.0f}s in the future (limit {self.max_future_skew_us // 1_000_000}s)",
                name,
            )
        return value


def _price(value: Any, name: str) -> float:
    if value is None or not math.isfinite(value) or value < 0:
        raise invalid("bad_price", f"{name} must be a finite number >= 0, got {value!r}", name)
    return float(value)


def _optional_price(value: Any, name: str) -> float | None:
    return None if value is None else _price(value, name)


def _quantity(value: Any, name: str) -> Any:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise invalid("bad_volume", f"{name} must be finite and >= 0, got {value!r}", name)
    return value


def _finite(value: Any, name: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise invalid("bad_number", f"{name} must be finite, got {value!r}", name)
    return value  # type: ignore[no-any-return]


def _revision(value: Any) -> int:
    if value < 0:
        raise invalid("bad_revision", f"revision must be >= 0, got {value}", "revision")
    return int(value)


def bar(r: Record, rules: Rules) -> Row:
    tenant = rules.tenants.check(r["tenant_id"])
    timeframe = _TIMEFRAME.get(r["timeframe"])
    if timeframe is None:
        raise invalid(
            "bad_timeframe", f"timeframe {r['timeframe']!r} is not one of {', '.join(sorted(TIMEFRAMES))}", "timeframe"
        )
    o, h, lo, c = (
        _price(r["open"], "open"),
        _price(r["high"], "high"),
        _price(r["low"], "low"),
        _price(r["close"], "close"),
    )
    if h < max(o, c) or lo > min(o, c):
        raise invalid("ohlc_inconsistent", f"high {h} / low {lo} do not bound open {o} and close {c}", "high")
    trade_count = r.get("trade_count")
    if trade_count is not None and trade_count < 0:
        raise invalid("bad_volume", f"trade_count must be >= 0, got {trade_count}", "trade_count")
    return (
        rules.ts(r["ts"], "ts"),
        tenant,
        rules.vendor(r["vendor"]),
        rules.symbol(r["symbol"]),
        timeframe,
        o,
        h,
        lo,
        c,
        _quantity(r["volume"], "volume"),
        _optional_price(r.get("vwap"), "vwap"),
        trade_count,
        _revision(r.get("revision", 0)),
    )


def quote(r: Record, rules: Rules) -> Row:
    tenant = rules.tenants.check(r["tenant_id"])
    bid, ask = _price(r["bid"], "bid"), _price(r["ask"], "ask")
    if bid >= ask and not rules.keep_crossed_quotes:
        code, relation = ("crossed_quote", "above") if bid > ask else ("locked_quote", "equal to")
        raise invalid(code, f"bid {bid} is {relation} ask {ask} (validation.crossed_quotes is reject)", "bid")
    return (
        rules.ts(r["ts"], "ts"),
        tenant,
        rules.vendor(r["vendor"]),
        rules.symbol(r["symbol"]),
        bid,
        ask,
        _quantity(r["bid_size"], "bid_size"),
        _quantity(r["ask_size"], "ask_size"),
        r.get("exchange"),
        _revision(r.get("revision", 0)),
    )


def fundamentals(r: Record, rules: Rules) -> Row:
    tenant = rules.tenants.check(r["tenant_id"])
    as_of: int = r["as_of"]
    rules.ts(as_of * _US_PER_DAY, "as_of")
    period = r.get("period", "FY")
    if period not in PERIODS:
        raise invalid("bad_period", f"period {period!r} is not one of {', '.join(sorted(PERIODS))}", "period")
    currency = r.get("currency", "USD")
    if not _CURRENCY.match(currency):
        raise invalid("bad_currency", f"currency {currency!r} is not an ISO 4217 code", "currency")
    return (
        as_of,
        tenant,
        rules.vendor(r["vendor"]),
        rules.symbol(r["symbol"]),
        period,
        currency,
        _finite(r.get("total_assets"), "total_assets"),
        _finite(r.get("total_liabilities"), "total_liabilities"),
        _finite(r.get("revenue"), "revenue"),
        _finite(r.get("net_income"), "net_income"),
        _finite(r.get("eps"), "eps"),
        _quantity(r.get("shares_outstanding"), "shares_outstanding"),
        _revision(r.get("revision", 0)),
    )


def news_id(vendor: str, published_us: int, title: str, url: str | None) -> str:
    """A deterministic id for an article without one: the same content is the same row."""
    content = json.dumps([vendor, published_us, title, url], ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(content.encode()).hexdigest()[:32]


def news(r: Record, rules: Rules) -> Row:
    tenant = rules.tenants.check(r["tenant_id"])
    vendor = rules.vendor(r["vendor"])
    published = rules.ts(r["published_at"], "published_at")
    title = r["title"].strip()
    if not title:
        raise invalid("empty_title", "title is empty", "title")
    sentiment = r.get("sentiment_score")
    if sentiment is not None and not (math.isfinite(sentiment) and -1.0 <= sentiment <= 1.0):
        raise invalid("bad_sentiment", f"sentiment_score must be within [-1, 1], got {sentiment!r}", "sentiment_score")
    url = r.get("url")
    article_id = r.get("id") or news_id(vendor, published, title, url)
    symbol = r.get("symbol")
    return (
        published,
        tenant,
        article_id,
        vendor,
        title,
        None if symbol is None else rules.symbol(symbol),
        url,
        r.get("summary"),
        sentiment,
    )


def option_snapshot(r: Record, rules: Rules) -> Row:
    tenant = rules.tenants.check(r["tenant_id"])
    ts = rules.ts(r["ts"], "ts")
    option_type = r["option_type"]
    if option_type not in ("C", "P"):
        raise invalid("bad_option_type", f"option_type must be C or P, got {option_type!r}", "option_type")
    strike = r["strike"]
    if not (math.isfinite(strike) and strike > 0):
        raise invalid("bad_strike", f"strike must be > 0, got {strike!r}", "strike")
    expiry: int = r["expiry"]
    if expiry < ts // _US_PER_DAY:
        raise invalid("expiry_before_snapshot", "expiry is before the snapshot's date", "expiry")
    if expiry > ts // _US_PER_DAY + _MAX_EXPIRY_DAYS:
        raise invalid("expiry_too_far", "expiry is more than 50 years after the snapshot", "expiry")
    iv = r.get("iv")
    if iv is not None and not (math.isfinite(iv) and iv >= 0):
        raise invalid("bad_number", f"iv must be finite and >= 0, got {iv!r}", "iv")
    delta = r.get("delta")
    if delta is not None and not (math.isfinite(delta) and -1.0 <= delta <= 1.0):
        raise invalid("bad_number", f"delta must be within [-1, 1], got {delta!r}", "delta")
    return (
        ts,
        tenant,
        rules.vendor(r["vendor"]),
        rules.symbol(r["underlying"], "underlying"),
        expiry,
        option_type,
        float(strike),
        iv,
        delta,
        _finite(r.get("gamma"), "gamma"),
        _finite(r.get("theta"), "theta"),
        _finite(r.get("vega"), "vega"),
        _quantity(r.get("open_interest"), "open_interest"),
        _quantity(r.get("volume"), "volume"),
        _optional_price(r.get("spot"), "spot"),
        _optional_price(r.get("bid"), "bid"),
        _optional_price(r.get("ask"), "ask"),
    )


def job_request(r: Record, rules: Rules) -> Row:
    tenant = rules.tenants.check(r["tenant_id"])
    key = r["idempotency_key"]
    if not 1 <= len(key) <= 200:
        raise invalid("bad_idempotency_key", "idempotency_key must be 1..200 characters", "idempotency_key")
    job_type = r["job_type"]
    if not _IDENT.match(job_type):
        raise invalid("bad_job_type", f"job_type {job_type!r} must be a lower-case identifier", "job_type")
    try:
        payload = json.loads(r.get("payload", "{}"))
    except ValueError as exc:
        raise invalid("bad_payload", f"payload is not JSON: {exc}", "payload") from None
    if not isinstance(payload, dict):
        raise invalid("bad_payload", "payload must be a JSON object", "payload")
    priority = r.get("priority", 0)
    if not -100 <= priority <= 100:
        raise invalid("bad_priority", f"priority must be within [-100, 100], got {priority}", "priority")
    return (
        tenant,
        key,
        job_type,
        json.dumps(payload, separators=(",", ":")),
        priority,
        rules.ts(r["requested_at"], "requested_at"),
        r.get("requested_by"),
    )
