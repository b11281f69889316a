from __future__ import annotations

import os
from pathlib import Path

import pytest

from mds_sink.config.settings import load_settings
from mds_sink.errors import SettingsError
from mds_sink.kafka.clients import consumer_config


def test_environment_sets_nested_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDS_SINK_BATCHING__MAX_ROWS", "1234")
    monkeypatch.setenv("MDS_SINK_KAFKA__CONSUMER_OPTIONS", '{"fetch.max.bytes": 1048576}')
    monkeypatch.setenv("MDS_SINK_TOPICS__BARS", "md.bars.v1")
    s = load_settings()
    assert s.batching.max_rows == 1234
    assert s.kafka.consumer_options == {"fetch.max.bytes": 1048576}
    assert s.topics.table_by_topic()["md.bars.v1"] == "bars"


def test_wrong_setting_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDS_SINK_BATCHING__MAX_ROWS", "zero")
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("invalid setting batching.max_rows (MDS_SINK_BATCHING__MAX_ROWS):")
    assert "'zero'" in message


def test_unknown_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDS_SINK_BATCHING__MAX_ROWZ", "5")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        "invalid setting MDS_SINK_BATCHING__MAX_ROWZ: unknown variable; did you mean MDS_SINK_BATCHING__MAX_ROWS?"
    )


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("MDS_SINK_BATCHING_MAX_ROWS", "; did you mean MDS_SINK_BATCHING__MAX_ROWS?"),
        ("MDS_SINK_KAFKA__GROUPID", "; did you mean MDS_SINK_KAFKA__GROUP_ID?"),
        ("MDS_SINK_ZZZZZZZZZZZZZZZZZZ", ""),
    ],
)
def test_a_misspelt_variable_stops_the_load_naming_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, closest: str
) -> None:
    monkeypatch.setenv(variable, "5")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == f"invalid setting {variable}: unknown variable{closest}"


def test_a_misspelt_key_in_the_file_names_the_closest_setting(tmp_path: Path) -> None:
    config = tmp_path / "sink.toml"
    config.write_text("[batching]\nmax_rowz = 3\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    assert str(caught.value) == (
        "invalid setting batching.max_rowz (MDS_SINK_BATCHING__MAX_ROWZ): unknown setting; "
        "did you mean batching.max_rows?"
    )


def test_librdkafka_options_are_checked_when_the_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDS_SINK_KAFKA__CONSUMER_OPTIONS", '{"no.such.option": 1}')
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        "invalid setting kafka.consumer_options (MDS_SINK_KAFKA__CONSUMER_OPTIONS): librdkafka refuses it: "
        'No such configuration property: "no.such.option"'
    )
    monkeypatch.setenv("MDS_SINK_KAFKA__CONSUMER_OPTIONS", '{"fetch.wait.max.ms": 50}')
    assert load_settings().kafka.consumer_options == {"fetch.wait.max.ms": 50}


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        ('{"acks": "0"}', "acks=0 would let a dead letter count as sent"),
        ('{"acks": 1}', "acks=1 would let a dead letter count as sent"),
        ('{"enable.idempotence": false}', "enable.idempotence=False would let a dead letter count as sent"),
        ('{"bootstrap.servers": "x:1"}', "bootstrap.servers is set by the sink itself"),
    ],
)
def test_producer_options_that_break_the_dead_letter_guarantee_are_refused(
    monkeypatch: pytest.MonkeyPatch, options: str, refusal: str
) -> None:
    monkeypatch.setenv("MDS_SINK_KAFKA__PRODUCER_OPTIONS", options)
    with pytest.raises(SettingsError, match=refusal):
        load_settings()


def test_the_documented_placeholder_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDS_SINK_HTTP__ADMIN_TOKEN", "change-me-0123456789abcdef0123456789abcdef")
    with pytest.raises(SettingsError, match=r"admin_token .*is the documented placeholder"):
        load_settings()


def test_password_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDS_SINK_DATABASE__URL", "mysql://user:hunter2@db/x")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "database.url" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_short_admin_token_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDS_SINK_HTTP__ADMIN_TOKEN", "short")
    with pytest.raises(SettingsError, match=r"http\.admin_token .*at least 32 characters"):
        load_settings()


def test_reserved_librdkafka_options_cannot_be_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDS_SINK_KAFKA__CONSUMER_OPTIONS", '{"enable.auto.commit": true}')
    with pytest.raises(SettingsError, match=r"enable\.auto\.commit is set by the sink itself"):
        load_settings()


def test_the_assignment_strategy_is_a_setting_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().kafka.assignment_strategy == "roundrobin"
    monkeypatch.setenv("MDS_SINK_KAFKA__CONSUMER_OPTIONS", '{"partition.assignment.strategy": "range"}')
    with pytest.raises(SettingsError, match=r"partition\.assignment\.strategy .*use kafka\.assignment_strategy"):
        load_settings()
    monkeypatch.delenv("MDS_SINK_KAFKA__CONSUMER_OPTIONS")
    monkeypatch.setenv("MDS_SINK_KAFKA__ASSIGNMENT_STRATEGY", "sticky")
    with pytest.raises(SettingsError, match=r"kafka\.assignment_strategy"):
        load_settings()


def test_the_group_protocol_is_a_setting_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = load_settings().kafka
    assert (kafka.group_protocol, kafka.remote_assignor) == ("auto", "range")
    monkeypatch.setenv("MDS_SINK_KAFKA__CONSUMER_OPTIONS", '{"group.protocol": "consumer"}')
    with pytest.raises(SettingsError, match=r"group\.protocol is set by the sink itself .*use kafka\.group_protocol"):
        load_settings()
    monkeypatch.delenv("MDS_SINK_KAFKA__CONSUMER_OPTIONS")
    monkeypatch.setenv("MDS_SINK_KAFKA__GROUP_PROTOCOL", "kip848")
    with pytest.raises(SettingsError, match=r"kafka\.group_protocol"):
        load_settings()


def test_the_consumer_protocol_leaves_session_and_assignment_to_the_broker() -> None:
    s = load_settings(kafka={"session_timeout_ms": 10_000, "assignment_strategy": "cooperative-sticky"})
    classic = consumer_config(s)
    assert classic["partition.assignment.strategy"] == "cooperative-sticky"
    assert classic["session.timeout.ms"] == 10_000 and "group.protocol" not in classic
    consumer = consumer_config(s, "consumer")
    assert (consumer["group.protocol"], consumer["group.remote.assignor"]) == ("consumer", "range")
    # librdkafka refuses both under the consumer protocol: the broker's group settings hold them.
    assert "session.timeout.ms" not in consumer and "partition.assignment.strategy" not in consumer


def test_config_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "sink.toml"
    config.write_text('[batching]\nmax_rows = 77\nmax_ms = 900\n[kafka]\ngroup_id = "from-file"\n')
    monkeypatch.setenv("MDS_SINK_BATCHING__MAX_MS", "100")
    s = load_settings(config)
    assert (s.batching.max_rows, s.batching.max_ms, s.kafka.group_id) == (77, 100, "from-file")


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(tmp_path / "absent.toml")


def test_one_topic_for_two_tables_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDS_SINK_TOPICS__QUOTES", "mds.bars")
    with pytest.raises(SettingsError, match=r"topics\.quotes: topic 'mds\.bars' is already used by topics\.bars"):
        load_settings()


def test_bad_bootstrap_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDS_SINK_KAFKA__BOOTSTRAP_SERVERS", "localhost")
    with pytest.raises(SettingsError, match=r"kafka\.bootstrap_servers .*host:port"):
        load_settings()


def test_a_config_file_applies_to_its_own_load_and_leaves_the_environment_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MDS_SINK_CONFIG_FILE", raising=False)
    monkeypatch.delenv("MDS_SINK_BATCHING__MAX_ROWS", raising=False)
    config = tmp_path / "sink.toml"
    config.write_text("[batching]\nmax_rows = 77\n")
    assert load_settings(config).batching.max_rows == 77
    assert "MDS_SINK_CONFIG_FILE" not in os.environ
    assert load_settings().batching.max_rows == 10_000
