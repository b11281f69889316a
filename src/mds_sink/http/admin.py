"""The admin API's actions: pause, resume, flush, tenants reload, log level, redacted config.

Authentication is the transport's job (http.server). Each action takes the sink (SinkControl) and the
raw request body and returns a status and a JSON payload; bodies are validated here into clear 400
messages. Actions on the consumer are queued to the consumer thread; an action waits briefly for its
effect to show in the published state so the operator gets an answer, not a guess.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mds_sink.config.settings import Settings
from mds_sink.db.dsn import describe_dsn
from mds_sink.sink.control import SinkControl

log = logging.getLogger(__name__)

Reply = tuple[int, dict[str, Any]]

MAX_BODY_BYTES = 16 * 1024
# How long an action waits for the consumer loop to apply it (one turn is at most poll_timeout_ms).
APPLY_WAIT_S = 5.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
REDACTED = "**redacted**"
# librdkafka and registry options whose values are credentials (sasl.password, ssl.key.pem, ...).
_SECRET_OPTION = re.compile(r"password|secret|token|credential|jaas|user\.info|\.pem|key", re.IGNORECASE)


class BadRequest(Exception):
    """The body is not what the endpoint takes; the message says what is wrong, for a 400."""


# -- bodies ---------------------------------------------------------------------------------------
def json_object(body: bytes, *, allowed: frozenset[str]) -> dict[str, Any]:
    if not body.strip():
        raise BadRequest("a JSON object body is required")
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    return value


def partition_target(body: bytes, topics: frozenset[str]) -> tuple[str, int | None]:
    """{"topic": "...", "partition": 0} -> (topic, partition); the partition is optional."""
    fields = json_object(body, allowed=frozenset({"topic", "partition"}))
    topic = fields.get("topic")
    if not isinstance(topic, str) or not topic:
        raise BadRequest("field 'topic' is required and must be a non-empty string")
    if topic not in topics:
        raise BadRequest(f"topic {topic!r} is not consumed by this sink; consumed: {', '.join(sorted(topics))}")
    partition = fields.get("partition")
    if partition is not None and (isinstance(partition, bool) or not isinstance(partition, int) or partition < 0):
        raise BadRequest("field 'partition' must be a non-negative integer when given")
    return topic, partition


def _names(partitions: set[tuple[str, int]]) -> list[str]:
    return [f"{t}[{p}]" for t, p in sorted(partitions)]


def _wait(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + APPLY_WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _matching(partitions: frozenset[tuple[str, int]], topic: str, partition: int | None) -> set[tuple[str, int]]:
    return {(t, p) for t, p in partitions if t == topic and partition in (None, p)}


# -- actions --------------------------------------------------------------------------------------
def pause(sink: SinkControl, body: bytes) -> Reply:
    topic, partition = partition_target(body, sink.topics)
    chosen = _matching(sink.state.snapshot.assignment, topic, partition)
    if not chosen:
        return HTTPStatus.CONFLICT, {"error": "no matching partition is assigned to this sink right now"}
    sink.pause(topic, partition)
    log.warning("admin: pause %s requested", ", ".join(_names(chosen)))
    if _wait(lambda: chosen <= sink.state.paused):
        return HTTPStatus.OK, {"paused": _names(chosen)}
    return HTTPStatus.ACCEPTED, {"queued": _names(chosen), "note": "not yet applied by the consumer loop"}


def resume(sink: SinkControl, body: bytes) -> Reply:
    topic, partition = partition_target(body, sink.topics)
    # An operator's pause outlives a rebalance: one held for a partition assigned elsewhere now is released too.
    chosen = _matching(sink.state.snapshot.operator_paused, topic, partition)
    if not chosen:
        return HTTPStatus.OK, {"resumed": [], "note": "no matching partition was paused by an operator"}
    sink.resume(topic, partition)
    log.warning("admin: resume %s requested", ", ".join(_names(chosen)))
    if _wait(lambda: not chosen & (sink.state.snapshot.paused | sink.state.snapshot.operator_paused)):
        return HTTPStatus.OK, {"resumed": _names(chosen)}
    return HTTPStatus.ACCEPTED, {
        "queued": _names(chosen),
        "note": "still paused: backpressure holds them until the buffer drains",
    }


def flush(sink: SinkControl, body: bytes) -> Reply:
    if body.strip() not in (b"", b"{}"):
        raise BadRequest("this endpoint takes no body")
    buffered = sink.state.snapshot.buffered
    sink.flush_now()
    log.warning("admin: flush requested (%d records buffered)", buffered)
    return HTTPStatus.ACCEPTED, {"flush": "requested", "buffered_records": buffered}


def reload_tenants(sink: SinkControl, body: bytes) -> Reply:
    if body.strip() not in (b"", b"{}"):
        raise BadRequest("this endpoint takes no body")
    try:
        known, active = sink.reload_tenants()
    except Exception as exc:
        log.warning("admin: tenant reload failed: %s", exc)
        return HTTPStatus.SERVICE_UNAVAILABLE, {"error": "tenant reload failed: the database did not answer"}
    log.warning("admin: tenants reloaded (%d known)", known)
    return HTTPStatus.OK, {"known": known, "active": active}


def log_level(sink: SinkControl, body: bytes) -> Reply:
    fields = json_object(body, allowed=frozenset({"level"}))
    level = fields.get("level")
    if not isinstance(level, str) or level.upper() not in LOG_LEVELS:
        raise BadRequest(f"field 'level' must be one of {', '.join(LOG_LEVELS)}")
    root = logging.getLogger()
    previous = logging.getLevelName(root.level)
    root.setLevel(level.upper())
    log.warning("admin: log level %s -> %s", previous, level.upper())
    return HTTPStatus.OK, {"level": level.upper(), "previous": previous}


def config(sink: SinkControl, body: bytes) -> Reply:
    return HTTPStatus.OK, redacted_settings(sink.settings)


# -- redaction ------------------------------------------------------------------------------------
def _redact_url(url: str) -> str:
    """Keep scheme, host, port and path; drop credentials and the query (it may hold some)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _redact_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: REDACTED if _SECRET_OPTION.search(k) else v for k, v in options.items()}


def redacted_settings(settings: Settings) -> dict[str, Any]:
    """The effective settings with every credential replaced; safe to paste into an incident channel."""
    out: dict[str, Any] = settings.model_dump(mode="json")
    db = settings.database
    for name in ("url", "owner_url", "reader_url", "roles_url"):
        secret = getattr(db, name)
        out["database"][name] = None if secret is None else describe_dsn(secret.get_secret_value())
    kafka = out["kafka"]
    kafka["consumer_options"] = _redact_options(kafka["consumer_options"])
    kafka["producer_options"] = _redact_options(kafka["producer_options"])
    if kafka["schema_registry_url"]:
        kafka["schema_registry_url"] = _redact_url(kafka["schema_registry_url"])
    out["http"]["admin_token"] = None if settings.http.admin_token is None else REDACTED
    return out
