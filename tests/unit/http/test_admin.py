"""Admin API pieces without a running sink: token checks, body validation, redaction of settings."""

from __future__ import annotations

import json
from http import HTTPStatus

import pytest
from pydantic import SecretStr

from mds_sink.config.settings import load_settings
from mds_sink.http.admin import BadRequest, json_object, partition_target, redacted_settings
from mds_sink.http.server import ADMIN_REALM, authenticate

TOKEN = SecretStr("s3cret-token-" + "x" * 30)
TOPICS = frozenset({"mds.bars", "mds.quotes"})


def test_a_missing_or_malformed_header_is_401_with_a_challenge() -> None:
    for header in (None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", TOKEN.get_secret_value()):
        refusal = authenticate(TOKEN, header)
        assert refusal is not None and refusal.status == HTTPStatus.UNAUTHORIZED, header
        assert refusal.headers == {"WWW-Authenticate": ADMIN_REALM}


def test_a_wrong_token_is_403_and_says_nothing_more() -> None:
    for wrong in ("nope", TOKEN.get_secret_value()[:-1], TOKEN.get_secret_value() + "x"):
        refusal = authenticate(TOKEN, f"Bearer {wrong}")
        assert refusal is not None and refusal.status == HTTPStatus.FORBIDDEN
        assert json.loads(refusal.body) == {"error": "forbidden"}


def test_the_right_token_passes_whatever_the_scheme_case() -> None:
    assert authenticate(TOKEN, f"Bearer {TOKEN.get_secret_value()}") is None
    assert authenticate(TOKEN, f"bearer {TOKEN.get_secret_value()}") is None


def test_without_a_configured_token_the_admin_api_is_disabled_not_open() -> None:
    for header in (None, "Bearer anything", f"Bearer {TOKEN.get_secret_value()}"):
        refusal = authenticate(None, header)
        assert refusal is not None and refusal.status == HTTPStatus.FORBIDDEN
        assert "admin API disabled" in json.loads(refusal.body)["error"]


def test_a_topic_and_an_optional_partition_are_accepted() -> None:
    assert partition_target(b'{"topic": "mds.bars"}', TOPICS) == ("mds.bars", None)
    assert partition_target(b'{"topic": "mds.bars", "partition": 2}', TOPICS) == ("mds.bars", 2)
    assert partition_target(b'{"topic": "mds.bars", "partition": null}', TOPICS) == ("mds.bars", None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "a JSON object body is required"),
        (b"{topic", "body is not valid JSON"),
        (b"\xff\xfe", "body is not valid JSON"),
        (b'["mds.bars"]', "body must be a JSON object"),
        (b"{}", "field 'topic' is required"),
        (b'{"topic": 3}', "field 'topic' is required"),
        (b'{"topic": "mds.news"}', "topic 'mds.news' is not consumed by this sink; consumed: mds.bars, mds.quotes"),
        (b'{"topic": "mds.bars", "partition": -1}', "field 'partition' must be a non-negative integer"),
        (b'{"topic": "mds.bars", "partition": "1"}', "field 'partition' must be a non-negative integer"),
        (b'{"topic": "mds.bars", "partition": true}', "field 'partition' must be a non-negative integer"),
        (b'{"topic": "mds.bars", "partition": 1.5}', "field 'partition' must be a non-negative integer"),
        (b'{"topic": "mds.bars", "partitions": [1]}', "unknown field 'partitions'; allowed: partition, topic"),
    ],
)
def test_bad_bodies_say_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as raised:
        partition_target(body, TOPICS)
    assert str(raised.value).startswith(message)


def test_json_object_accepts_only_the_allowed_fields() -> None:
    assert json_object(b'{"level": "DEBUG"}', allowed=frozenset({"level"})) == {"level": "DEBUG"}
    with pytest.raises(BadRequest, match="unknown field 'lvl'"):
        json_object(b'{"lvl": "DEBUG"}', allowed=frozenset({"level"}))


def test_redacted_settings_keep_what_helps_and_drop_every_credential() -> None:
    secrets = ["writer-pw", "owner-pw", "reader-pw", "sasl-pw", "ssl-key-pw", "registry-pw", TOKEN.get_secret_value()]
    settings = load_settings(
        database={
            "url": "postgresql://mds_writer:writer-pw@db.internal:5433/mds?sslmode=require",
            "owner_url": "postgresql://mds_owner:owner-pw@db.internal:5433/mds",
            "reader_url": "postgresql://mds_reader:reader-pw@db.internal:5433/mds",
        },
        kafka={
            "group_id": "mds-sink-prod",
            "schema_registry_url": "https://svc:registry-pw@registry.internal:8081/base?x=registry-pw",
            "consumer_options": {"sasl.password": "sasl-pw", "sasl.username": "svc", "fetch.max.bytes": 1048576},
            "producer_options": {"ssl.key.password": "ssl-key-pw", "linger.ms": 10},
        },
        http={"admin_token": TOKEN.get_secret_value()},
    )
    shown = redacted_settings(settings)
    text = json.dumps(shown)
    for secret in secrets:
        assert secret not in text
    assert shown["database"]["url"] == "db.internal:5433/mds as mds_writer"
    assert shown["database"]["owner_url"] == "db.internal:5433/mds as mds_owner"
    assert shown["kafka"]["schema_registry_url"] == "https://registry.internal:8081/base"
    assert shown["kafka"]["group_id"] == "mds-sink-prod"
    assert shown["kafka"]["consumer_options"]["sasl.username"] == "svc"
    assert shown["kafka"]["consumer_options"]["fetch.max.bytes"] == 1048576
    assert shown["kafka"]["producer_options"]["linger.ms"] == 10
    assert shown["http"]["admin_token"] == "**redacted**"
    assert shown["batching"] == settings.batching.model_dump()


def test_an_unset_token_shows_as_null() -> None:
    assert redacted_settings(load_settings(http={"admin_token": None}))["http"]["admin_token"] is None
