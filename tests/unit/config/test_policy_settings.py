from __future__ import annotations

import pytest

from mds_sink.config.policy_settings import PolicySettings
from mds_sink.config.settings import load_settings
from mds_sink.core.intervals import parse_interval
from mds_sink.errors import SettingsError


def test_defaults_follow_the_seeds() -> None:
    p = PolicySettings()
    shown = {
        name: (str(t.chunk_interval), str(t.compress_after or "never"), str(t.keep or "forever"))
        for name, t in p.tables().items()
    }
    assert shown == {
        "bars_minute": ("1 day", "1 day", "6 months"),
        "bars_hour": ("7 days", "7 days", "2 years"),
        "bars_day": ("30 days", "30 days", "10 years"),
        "quotes": ("1 day", "never", "14 days"),
        "fundamentals": ("365 days", "never", "forever"),
        "news": ("30 days", "never", "forever"),
        "option_snapshots": ("1 day", "never", "forever"),
    }
    assert p.aggregates.enabled
    assert {n: str(r.start_offset) for n, r in p.aggregates.refresh().items()} == {
        "bars_5m": "2 days",
        "bars_1h": "7 days",
        "bars_1d": "30 days",
    }


def test_one_field_from_the_environment_keeps_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDS_SINK_POLICIES__BARS_MINUTE__KEEP", "3 months")
    monkeypatch.setenv("MDS_SINK_POLICIES__BARS_MINUTE__CHUNK_INTERVAL", "12 hours")
    monkeypatch.setenv("MDS_SINK_POLICIES__QUOTES__KEEP", "never")
    monkeypatch.setenv("MDS_SINK_POLICIES__AGGREGATES__BARS_5M__START_OFFSET", "3 days")
    p = load_settings().policies
    assert p.bars_minute.keep == parse_interval("3 months")
    assert p.bars_minute.chunk_interval == parse_interval("12 hours")
    assert p.bars_minute.compress_after == parse_interval("1 day")
    assert p.quotes.keep is None
    assert p.aggregates.bars_5m.start_offset == parse_interval("3 days")
    assert p.aggregates.bars_5m.end_offset == parse_interval("5 minutes")


def test_dumps_as_text_and_loads_back() -> None:
    p = PolicySettings.model_validate({"news": {"keep": "1 year"}})
    dumped = p.model_dump()
    assert dumped["news"] == {"chunk_interval": "30 days", "compress_after": None, "keep": "1 year"}
    assert PolicySettings.model_validate(dumped) == p


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("MDS_SINK_POLICIES__BARS_DAY__CHUNK_INTERVAL", "1 month", "fixed lengths"),
        ("MDS_SINK_POLICIES__BARS_DAY__KEEP", "ten years", "expected an interval"),
        ("MDS_SINK_POLICIES__AGGREGATES__BARS_1H__START_OFFSET", "30 minutes", "longer than end_offset"),
        ("MDS_SINK_POLICIES__RETENTION_BATCH_ROWS", "0", "greater than or equal to 1"),
    ],
)
def test_a_wrong_policy_names_the_setting(monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=message) as raised:
        load_settings()
    assert "policies." in str(raised.value)
