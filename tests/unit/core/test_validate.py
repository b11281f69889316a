from __future__ import annotations

from typing import Any

import pytest

from mds_sink.core.catalog import TABLES, VALIDATORS
from mds_sink.core.rejection import RecordRejected
from mds_sink.core.validate import Rules, TenantSet, news_id

ACTIVE = "6f1c2a4e-8d3b-4c5a-9e7f-0a1b2c3d4e5f"
DISABLED = "7a2d3b5f-9e4c-4d6b-8f80-1b2c3d4e5f60"
NOW_US = 1_763_000_000_000_000  # 2025-11-13
DAY_US = 86_400_000_000


def rules() -> Rules:
    return Rules(TenantSet({ACTIVE: True, DISABLED: False}), now_us=NOW_US, max_future_skew_us=300_000_000)


def bar(**changes: Any) -> dict[str, Any]:
    return {
        "tenant_id": ACTIVE,
        "vendor": "polygon",
        "symbol": " aapl ",
        "timeframe": "1m",
        "ts": NOW_US - 60_000_000,
        "open": 10.0,
        "high": 11.0,
        "low": 9.5,
        "close": 10.5,
        "volume": 100.0,
        "vwap": 10.2,
        "trade_count": 12,
        "revision": 0,
        **changes,
    }


def option(**changes: Any) -> dict[str, Any]:
    return {
        "tenant_id": ACTIVE,
        "vendor": "opra",
        "underlying": "spy",
        "expiry": NOW_US // DAY_US + 30,
        "option_type": "C",
        "strike": 500.0,
        "ts": NOW_US,
        "iv": 0.2,
        "delta": 0.5,
        "gamma": 0.01,
        "theta": -0.1,
        "vega": 0.2,
        "open_interest": 10,
        "volume": 5,
        "spot": 501.0,
        "bid": 1.0,
        "ask": 1.1,
        **changes,
    }


def rejected(table: str, record: dict[str, Any]) -> tuple[str, str | None]:
    with pytest.raises(RecordRejected) as err:
        VALIDATORS[table](record, rules())
    return err.value.rejection.code, err.value.rejection.field


def test_valid_bar_becomes_a_staged_row_in_column_order() -> None:
    row = VALIDATORS["bars"](bar(), rules())
    assert row == (NOW_US - 60_000_000, ACTIVE, "polygon", "AAPL", "1m", 10.0, 11.0, 9.5, 10.5, 100.0, 10.2, 12, 0)
    assert len(row) == len(TABLES["bars"].columns)


def test_tenant_rules() -> None:
    assert rejected("bars", bar(tenant_id="not-a-uuid")) == ("bad_tenant_id", "tenant_id")
    assert rejected("bars", bar(tenant_id="00000000-0000-4000-8000-000000000000")) == ("unknown_tenant", "tenant_id")
    assert rejected("bars", bar(tenant_id=DISABLED)) == ("inactive_tenant", "tenant_id")
    # Upper-case ids are the same tenant, written in canonical form.
    assert VALIDATORS["bars"](bar(tenant_id=ACTIVE.upper()), rules())[1] == ACTIVE


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"symbol": "   "}, "bad_symbol", "symbol"),
        ({"symbol": "A" * 33}, "bad_symbol", "symbol"),
        ({"symbol": "AA PL"}, "bad_symbol", "symbol"),
        ({"timeframe": "2m"}, "bad_timeframe", "timeframe"),
        ({"open": float("nan")}, "bad_price", "open"),
        ({"close": float("inf")}, "bad_price", "close"),
        ({"low": -1.0}, "bad_price", "low"),
        ({"high": 10.2}, "ohlc_inconsistent", "high"),
        ({"low": 10.4}, "ohlc_inconsistent", "high"),
        ({"volume": -5.0}, "bad_volume", "volume"),
        ({"trade_count": -1}, "bad_volume", "trade_count"),
        ({"ts": -1}, "ts_before_epoch", "ts"),
        ({"ts": NOW_US + 301_000_000}, "ts_in_future", "ts"),
        ({"vendor": "Polygon Inc"}, "bad_vendor", "vendor"),
        ({"revision": -1}, "bad_revision", "revision"),
    ],
)
def test_bar_rules(changes: dict[str, Any], code: str, field: str) -> None:
    assert rejected("bars", bar(**changes)) == (code, field)


def test_future_skew_is_a_setting() -> None:
    r = Rules(TenantSet({ACTIVE: True}), now_us=NOW_US, max_future_skew_us=3_600_000_000)
    assert VALIDATORS["bars"](bar(ts=NOW_US + 1_800_000_000), r)[0] == NOW_US + 1_800_000_000


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"option_type": "X"}, "bad_option_type", "option_type"),
        ({"strike": 0.0}, "bad_strike", "strike"),
        ({"expiry": NOW_US // DAY_US - 1}, "expiry_before_snapshot", "expiry"),
        ({"expiry": 2_000_000_000}, "expiry_too_far", "expiry"),
        ({"delta": 1.5}, "bad_number", "delta"),
        ({"open_interest": -1}, "bad_volume", "open_interest"),
    ],
)
def test_option_rules(changes: dict[str, Any], code: str, field: str) -> None:
    assert rejected("option_snapshots", option(**changes)) == (code, field)


def test_expiry_on_the_snapshot_date_is_valid() -> None:
    row = VALIDATORS["option_snapshots"](option(expiry=NOW_US // DAY_US), rules())
    assert row[3:6] == ("SPY", NOW_US // DAY_US, "C")


def news(**changes: Any) -> dict[str, Any]:
    return {
        "tenant_id": ACTIVE,
        "vendor": "newswire",
        "id": None,
        "published_at": NOW_US,
        "title": "Fed holds",
        "symbol": None,
        "url": "https://x/1",
        "summary": None,
        "sentiment_score": 0.2,
        **changes,
    }


def test_news_without_id_gets_a_deterministic_id() -> None:
    first = VALIDATORS["news"](news(), rules())
    again = VALIDATORS["news"](news(), rules())
    other = VALIDATORS["news"](news(title="Fed cuts"), rules())
    assert first[2] == again[2] == news_id("newswire", NOW_US, "Fed holds", "https://x/1")
    assert first[2] != other[2]
    assert VALIDATORS["news"](news(id="v-1"), rules())[2] == "v-1"


def test_news_rules() -> None:
    assert rejected("news", news(sentiment_score=1.5)) == ("bad_sentiment", "sentiment_score")
    assert rejected("news", news(sentiment_score=float("nan"))) == ("bad_sentiment", "sentiment_score")
    assert rejected("news", news(title="  ")) == ("empty_title", "title")


def job(**changes: Any) -> dict[str, Any]:
    return {
        "tenant_id": ACTIVE,
        "idempotency_key": "k1",
        "job_type": "backfill_bars",
        "payload": '{"a": 1}',
        "priority": 0,
        "requested_at": NOW_US,
        "requested_by": None,
        **changes,
    }


def test_job_rules() -> None:
    assert VALIDATORS["jobs"](job(), rules())[3] == '{"a":1}'
    assert rejected("jobs", job(payload="{oops")) == ("bad_payload", "payload")
    assert rejected("jobs", job(payload="[1, 2]")) == ("bad_payload", "payload")
    assert rejected("jobs", job(priority=101)) == ("bad_priority", "priority")
    assert rejected("jobs", job(idempotency_key="")) == ("bad_idempotency_key", "idempotency_key")


def test_fundamentals_rules() -> None:
    record = {
        "tenant_id": ACTIVE,
        "vendor": "sec",
        "symbol": "msft",
        "as_of": NOW_US // DAY_US - 40,
        "period": "Q3",
        "currency": "USD",
        "total_assets": 1.0,
        "total_liabilities": 0.5,
        "revenue": 2.0,
        "net_income": -1.0,
        "eps": -0.1,
        "shares_outstanding": 10.0,
        "revision": 1,
    }
    assert VALIDATORS["fundamentals"](record, rules())[3] == "MSFT"
    assert rejected("fundamentals", {**record, "period": "H1"}) == ("bad_period", "period")
    assert rejected("fundamentals", {**record, "currency": "usd"}) == ("bad_currency", "currency")
    assert rejected("fundamentals", {**record, "shares_outstanding": -1.0}) == ("bad_volume", "shares_outstanding")


def test_quote_rules() -> None:
    record = {
        "tenant_id": ACTIVE,
        "vendor": "polygon",
        "symbol": "msft",
        "ts": NOW_US,
        "bid": 1.0,
        "ask": 1.1,
        "bid_size": 100.0,
        "ask_size": 200.0,
        "exchange": "XNAS",
        "revision": 0,
    }
    assert VALIDATORS["quotes"](record, rules())[3] == "MSFT"
    assert rejected("quotes", {**record, "ask": -0.01}) == ("bad_price", "ask")
    assert rejected("quotes", {**record, "bid_size": float("nan")}) == ("bad_volume", "bid_size")


def test_crossed_and_locked_quotes_are_refused_unless_the_policy_keeps_them() -> None:
    record = {"tenant_id": ACTIVE, "vendor": "v", "symbol": "X", "ts": NOW_US, "bid_size": 1.0, "ask_size": 1.0}
    crossed, locked = {**record, "bid": 10.5, "ask": 10.0}, {**record, "bid": 10.0, "ask": 10.0}
    assert rejected("quotes", crossed) == ("crossed_quote", "bid")
    assert rejected("quotes", locked) == ("locked_quote", "bid")
    with pytest.raises(RecordRejected) as caught:
        VALIDATORS["quotes"](crossed, rules())
    assert caught.value.rejection.message == "bid 10.5 is above ask 10.0 (validation.crossed_quotes is reject)"
    keep = Rules(TenantSet({ACTIVE: True}), now_us=NOW_US, keep_crossed_quotes=True)
    assert VALIDATORS["quotes"](crossed, keep)[4:6] == (10.5, 10.0)  # stored as it came
    assert VALIDATORS["quotes"](locked, keep)[4:6] == (10.0, 10.0)


def test_an_unknown_tenant_triggers_one_reload_before_it_is_refused() -> None:
    tenants = TenantSet({ACTIVE: True})
    reloads: list[int] = []

    def reload() -> bool:
        reloads.append(1)
        tenants.active = {ACTIVE: True, DISABLED: True}  # added since the last periodic refresh
        return True

    tenants.on_miss = reload
    r = Rules(tenants, now_us=NOW_US)
    assert VALIDATORS["bars"](bar(tenant_id=DISABLED), r)[1] == DISABLED
    assert len(reloads) == 1
    tenants.on_miss = lambda: False  # rate-limited: no reload, the record is refused
    with pytest.raises(RecordRejected, match="unknown_tenant"):
        VALIDATORS["bars"](bar(tenant_id="00000000-0000-4000-8000-000000000000"), r)


def fresh(text: str) -> str:
    """An equal string that is another object, as every decoded record brings."""
    return "".join(list(text))


def test_rows_of_a_series_share_one_object_per_series_column() -> None:
    # The bar continuity tracker (core/continuity.py) looks every row's series up in memory: with the
    # same objects the key compares by identity instead of reading strings no longer in the CPU cache.
    r = rules()
    first = VALIDATORS["bars"](bar(), r)
    second = VALIDATORS["bars"](
        bar(tenant_id=fresh(ACTIVE), vendor=fresh("polygon"), symbol=fresh(" aapl "), timeframe=fresh("1m")), r
    )
    assert second[1:5] == first[1:5]
    assert all(a is b for a, b in zip(second[1:5], first[1:5], strict=True))
    quote = {"tenant_id": fresh(ACTIVE), "vendor": fresh("polygon"), "symbol": "AAPL", "ts": NOW_US}
    quote |= {"bid": 1.0, "ask": 1.1, "bid_size": 1.0, "ask_size": 1.0}
    assert VALIDATORS["quotes"](quote, r)[1] is first[1]


def test_a_tenant_disabled_after_its_ids_were_seen_is_refused() -> None:
    tenants = TenantSet({ACTIVE: True})
    r = Rules(tenants, now_us=NOW_US)
    assert VALIDATORS["bars"](bar(), r)[1] == ACTIVE
    tenants.active = {ACTIVE: False}
    with pytest.raises(RecordRejected) as err:
        VALIDATORS["bars"](bar(), r)
    assert err.value.rejection.code == "inactive_tenant"


def test_a_vendor_refused_once_is_refused_again() -> None:
    r = rules()
    for _ in range(2):
        with pytest.raises(RecordRejected) as err:
            VALIDATORS["bars"](bar(vendor="Polygon Inc"), r)
        assert err.value.rejection.code == "bad_vendor"
