"""Settings: environment variables prefixed `MDS_SINK_`, nested with `__`, and an optional TOML file.

`MDS_SINK_BATCHING__MAX_ROWS=5000` sets `batching.max_rows`. A TOML file named by
`MDS_SINK_CONFIG_FILE` (or passed with `--config`) supplies defaults; the environment wins over it.
A wrong setting raises `SettingsError` with one line naming the setting and what is wrong.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, create_model, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mds_sink.config.continuity_settings import ContinuitySettings
from mds_sink.config.control_api_settings import ControlApiSettings
from mds_sink.config.policy_settings import PolicySettings
from mds_sink.config.resources import resource_dir
from mds_sink.core.catalog import CATALOG
from mds_sink.core.validate import Rules, TenantSet
from mds_sink.errors import SettingsError

ENV_PREFIX = "MDS_SINK_"
CONFIG_FILE_ENV = "MDS_SINK_CONFIG_FILE"
# A --config file given to load_settings, seen by the settings sources of that one load.
_CONFIG_FILE: ContextVar[str | None] = ContextVar("mds_sink_config_file", default=None)

# librdkafka options the sink sets itself; passing them through would break its guarantees.
_RESERVED_CONSUMER_OPTIONS = frozenset(
    {
        "enable.auto.commit",
        "enable.auto.offset.store",
        "group.id",
        "bootstrap.servers",
        "partition.assignment.strategy",
        "group.protocol",
        "group.remote.assignor",
    }
)


_SECRET_FIELDS = frozenset({"url", "owner_url", "reader_url", "roles_url", "admin_token"})

# Producer options the dead-letter guarantee rests on (acknowledged by every in-sync replica, no
# duplicates or reordering on a retry), with the values that keep it.
_DEAD_LETTER_GUARANTEE = {"acks": ("all", "-1"), "enable.idempotence": ("true",)}

# Variables with the prefix that are not settings: the config file's path and the local stack's cache.
_NOT_SETTINGS = frozenset({CONFIG_FILE_ENV, "MDS_SINK_CACHE"})
# The admin token of .env.example and deploy/k8s/secret.yaml: an example, never a credential.
PLACEHOLDER_TOKEN_PREFIX = "change-me"


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Group):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = Field(default="mds-sink", min_length=1)
    client_id: str = "mds-sink"
    schema_registry_url: str | None = Field(
        default=None,
        description="Confluent-compatible registry base URL; unset means registry-less mode (schemas/).",
    )
    session_timeout_ms: int = Field(default=45_000, ge=6_000)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    poll_timeout_ms: int = Field(default=100, ge=1, le=5_000)
    assignment_strategy: Literal["roundrobin", "range", "cooperative-sticky"] = Field(
        default="roundrobin",
        description=(
            "How the group shares partitions. roundrobin gives every replica an equal share of each topic; "
            "cooperative-sticky moves fewer partitions on a change but balances only the count, so one "
            "replica may get every partition of the busiest topic (docs/scaling.md)."
        ),
    )
    group_protocol: Literal["auto", "consumer", "classic"] = Field(
        default="auto",
        description=(
            "The group protocol. consumer (KIP-848, Kafka 4+): the broker assigns, incrementally, and members "
            "that keep their partitions never stop; session timeout and heartbeat are the broker's group "
            "settings then. classic: the client-side protocol with kafka.assignment_strategy (Redpanda, older "
            "Kafka). auto: consumer where the broker offers it, else classic."
        ),
    )
    remote_assignor: Literal["range", "uniform"] = Field(
        default="range",
        description=(
            "The broker's assignor under the consumer protocol: range deals every topic out over the members "
            "(an equal share of each), uniform balances the count only."
        ),
    )
    consumer_options: dict[str, str | int | bool] = Field(
        default_factory=dict, description="librdkafka consumer options passed through as they are."
    )
    producer_options: dict[str, str | int | bool] = Field(
        default_factory=dict, description="librdkafka producer options passed through as they are."
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, v: str) -> str:
        for server in v.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {v!r}")
        return v

    @field_validator("consumer_options")
    @classmethod
    def _consumer_options(cls, v: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        reserved = sorted(_RESERVED_CONSUMER_OPTIONS & v.keys())
        if reserved:
            # The sink assigns partitions differently under a cooperative strategy or the consumer protocol:
            # it must know which one runs.
            settings = {
                "partition.assignment.strategy": "kafka.assignment_strategy",
                "group.protocol": "kafka.group_protocol",
                "group.remote.assignor": "kafka.remote_assignor",
            }
            named = [settings[o] for o in reserved if o in settings]
            hint = f"; use {', '.join(named)}" if named else ""
            raise ValueError(f"{', '.join(reserved)} is set by the sink itself and cannot be passed through{hint}")
        return _librdkafka_accepts("consumer", v)

    @field_validator("producer_options")
    @classmethod
    def _producer_options(cls, v: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        for name, safe in _DEAD_LETTER_GUARANTEE.items():
            if name in v and str(v[name]).lower() not in safe:
                raise ValueError(
                    f"{name}={v[name]} would let a dead letter count as sent before the broker has it, and its "
                    f"record's offset be committed: the sink needs {name}={safe[0]}"
                )
        if "bootstrap.servers" in v:
            raise ValueError("bootstrap.servers is set by the sink itself (kafka.bootstrap_servers)")
        return _librdkafka_accepts("producer", v)


def _librdkafka_accepts(kind: str, options: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
    """An unknown option or a wrong value is refused now, not when `run` creates its clients."""
    if not options:
        return options
    # Only settings that pass options load the client library: most commands never need it.
    import confluent_kafka  # noqa: PLC0415

    quiet = {"log_level": 0}  # no bootstrap servers: the client connects to nothing before it is dropped
    try:
        if kind == "consumer":
            confluent_kafka.Consumer({**quiet, "group.id": "mds-sink-settings-check", **options}).close()
        else:
            confluent_kafka.Producer({**quiet, **options})
    except confluent_kafka.KafkaException as exc:
        raise ValueError(f"librdkafka refuses it: {exc.args[0].str()}") from None
    return options


class DatabaseSettings(_Group):
    url: SecretStr = Field(
        default=SecretStr("postgresql://mds_writer@127.0.0.1:5432/mds"),
        description="Connection of the sink: the writer role (not superuser, no BYPASSRLS, owns nothing).",
    )
    owner_url: SecretStr | None = Field(
        default=None, description="Connection of the owner role, for `admin` commands (migrations)."
    )
    reader_url: SecretStr | None = Field(
        default=None, description="Connection of the read-only role, for `query` commands."
    )
    roles_url: SecretStr | None = Field(
        default=None,
        description="Connection of a role with CREATEROLE, for `admin tenants reader` (default: owner_url).",
    )
    writer_role: str = "mds_writer"
    reader_role: str = "mds_reader"

    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=4, ge=1)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    pool_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a flush waits for a pooled connection before it fails (and is retried).",
    )
    statement_timeout_ms: int = Field(default=60_000, ge=0)

    @field_validator("url", "owner_url", "reader_url", "roles_url")
    @classmethod
    def _postgres_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        url = v.get_secret_value()
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a postgresql:// URL")
        # libpq's own parser (multi-host URLs and query parameters included), so that a URL it cannot
        # read is refused here, in one line, and not deep inside the first connection.
        from psycopg import ProgrammingError  # noqa: PLC0415  (the database commands load it anyway)
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

        # Never quote the parts: a misplaced password would be echoed back.
        encode = "percent-encode @, :, / and [ ] in the user name and password"
        try:
            info = conninfo_to_dict(url)
        except ProgrammingError:
            raise ValueError(f"not a URL libpq can read; {encode}") from None
        # libpq parses leniently and fails only when it connects: check what it read.
        for port in str(info.get("port") or "").split(","):
            if port and not (port.isdigit() and 0 < int(port) < 65_536):
                raise ValueError(f"its port is not a number from 1 to 65535; {encode}")
        if any(c in str(info.get("host") or "") for c in "@[]"):
            raise ValueError(f"its host name holds @ or [ ]; {encode}")
        return v

    def require_owner_url(self, purpose: str = "for admin commands (the role that owns the schema)") -> str:
        """The owner role's URL, or the one-line error naming the setting every owner command gives."""
        if self.owner_url is None:
            raise SettingsError(
                f"invalid setting database.owner_url (MDS_SINK_DATABASE__OWNER_URL): required {purpose}"
            )
        return self.owner_url.get_secret_value()


class BatchingSettings(_Group):
    # 10,000: a flush's fixed costs (transaction, COPY, one upsert per tenant, latest_prices rows touched
    # once per series) spread over twice the rows of 5,000 made the database write ~12% faster per row
    # (benchmarks/README.md); the memory it costs is ~25 MB at peak.
    max_rows: int = Field(default=10_000, ge=1, description="Flush a table's batch at this many rows.")
    max_ms: int = Field(
        default=500,
        ge=1,
        description="A record's budget until its row is committed: a batch is flushed early enough (by what the "
        "recent writes took, at most half of it) for its first record to be committed this long after it came.",
    )
    max_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Flush a batch at this many bytes of record values."
    )
    max_buffered_records: int = Field(
        default=50_000, ge=1, description="Pause consumption while this many records wait for a flush."
    )


class HttpSettings(_Group):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65_535, description="0 picks a free port.")
    admin_token: SecretStr | None = None

    @field_validator("admin_token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (unset it to disable the admin API)")
        if v is not None and v.get_secret_value().startswith(PLACEHOLDER_TOKEN_PREFIX):
            raise ValueError(
                "is the documented placeholder; set a secret of your own, e.g. `openssl rand -hex 32` "
                "(or unset it to disable the admin API)"
            )
        return v


class _TopicsBase(_Group):
    """Topic of each data type (one field per catalog entry); an empty string leaves it unconsumed."""

    dead_letter: str = Field(
        default="{topic}.dlq",
        description="Dead-letter topic: a name shared by all, or a pattern with {topic}.",
    )
    tenant_topics: bool = Field(
        default=False,
        description=(
            "Tenant-scoped topics: topics.bars = 'mds.bars' means a topic 'mds.<tenant id>.bars' per tenant, "
            "subscribed by pattern; a record whose tenant is not its topic's is dead-lettered (tenant_mismatch). "
            "Dead letters go to the dead-letter topic of the base topic ('mds.bars.dlq')."
        ),
    )

    def table_by_topic(self) -> dict[str, str]:
        routes: dict[str, str] = {}
        for table in CATALOG:
            topic: str = getattr(self, table)
            if not topic:
                continue
            if topic in routes:
                raise SettingsError(
                    f"invalid setting topics.{table}: topic {topic!r} is already used by topics.{routes[topic]}"
                )
            routes[topic] = table
        return routes


# One `topics.<name>` setting per data type of the catalog, with the catalog's default: adding a data
# type adds its setting. Static typing sees the base; every reader goes through getattr or a dump.
if TYPE_CHECKING:
    TopicsSettings = _TopicsBase
else:
    TopicsSettings = create_model(
        "TopicsSettings",
        __base__=_TopicsBase,
        __doc__=_TopicsBase.__doc__,
        **{name: (str, entry.topic) for name, entry in CATALOG.items()},
    )


class ErrorsSettings(_Group):
    """What a bad record does, as Kafka Connect's errors.tolerance and its dead-letter context headers."""

    tolerance: Literal["dead-letter", "stop"] = Field(
        default="dead-letter",
        description=(
            "dead-letter: a bad record goes to the dead-letter topic and the good ones go on (Connect's "
            "errors.tolerance=all with a DLQ); stop: the sink stops before the batch holding it commits "
            "(errors.tolerance=none)."
        ),
    )
    context_headers: bool = Field(
        default=False,
        description=(
            "Add mds.dlq.exception.class and mds.dlq.exception.stacktrace (at most 4,000 characters) to dead "
            "letters (Connect's errors.deadletterqueue.context.headers.enable)."
        ),
    )


class ValidationSettings(_Group):
    max_future_skew_s: int = Field(default=300, ge=0, description="How far into the future a timestamp may be.")
    symbol_max_length: int = Field(default=32, ge=1, le=256)
    tenant_refresh_s: float = Field(default=5.0, gt=0, description="How often the tenant set is reloaded.")
    crossed_quotes: Literal["reject", "keep"] = Field(
        default="reject",
        description=(
            "A quote whose bid is above (crossed) or equal to (locked) its ask: reject dead-letters it as "
            "crossed_quote or locked_quote; keep stores it as it came (bid >= ask marks it), and it never "
            "moves latest_prices."
        ),
    )

    def rules(self, tenants: TenantSet, *, now_us: int) -> Rules:
        """The validators' rules under these settings (the sink, a backfill and a replay share them)."""
        return Rules(
            tenants,
            now_us=now_us,
            max_future_skew_us=self.max_future_skew_s * 1_000_000,
            symbol_max_length=self.symbol_max_length,
            keep_crossed_quotes=self.crossed_quotes == "keep",
        )


class RetrySettings(_Group):
    initial_backoff_s: float = Field(default=0.2, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    unknown_error_attempts: int = Field(
        default=5, ge=1, description="Attempts for an error neither poison nor transient before the worker stops."
    )
    breaker_threshold: int = Field(
        default=3, ge=1, description="Consecutive transient failures that open the circuit breaker."
    )


class LogSettings(_Group):
    format: Literal["json", "console"] = "console"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    database: DatabaseSettings = DatabaseSettings()
    batching: BatchingSettings = BatchingSettings()
    http: HttpSettings = HttpSettings()
    topics: TopicsSettings = TopicsSettings()
    validation: ValidationSettings = ValidationSettings()
    errors: ErrorsSettings = ErrorsSettings()
    retry: RetrySettings = RetrySettings()
    log: LogSettings = LogSettings()
    policies: PolicySettings = PolicySettings()
    control_api: ControlApiSettings = ControlApiSettings()
    continuity: ContinuitySettings = ContinuitySettings()
    shutdown_deadline_s: float = Field(default=30.0, gt=0, description="SIGTERM drain deadline.")
    schemas_dir: Path | None = Field(default=None, description="Directory of the .avsc files; default: bundled.")

    @property
    def schemas(self) -> Path:
        """The directory of the .avsc files: `schemas_dir`, else the bundled one."""
        return self.schemas_dir or resource_dir("schemas")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _CONFIG_FILE.get() or os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def setting_env_names() -> set[str]:
    """Every environment variable the settings read: MDS_SINK_ + the field path joined with `__` (a group
    can also be given whole, as JSON)."""
    names: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            env = prefix + name.upper()
            names.add(env)
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                walk(info.annotation, env + "__")

    walk(Settings, ENV_PREFIX)
    return names


def _dict_settings() -> tuple[str, ...]:
    """Settings that are maps (librdkafka options): any key below them is theirs to check."""
    return ("MDS_SINK_KAFKA__CONSUMER_OPTIONS__", "MDS_SINK_KAFKA__PRODUCER_OPTIONS__")


def _closest(name: str, known: Iterable[str]) -> str:
    found = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {found[0]}?" if found else ""


def _unknown_variable(environ: Mapping[str, str]) -> str | None:
    """The first MDS_SINK_* variable that is no setting, described with the closest one: pydantic-settings
    would ignore it, so a misspelt `MDS_SINK_BATCHING_MAX_ROWS` would silently keep the default."""
    known = setting_env_names() | _NOT_SETTINGS
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper.startswith(_dict_settings()):
            continue
        return f"invalid setting {name}: unknown variable{_closest(upper, known - _NOT_SETTINGS)}"
    return None


def _field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        paths.add(prefix + name)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            paths |= _field_paths(info.annotation, f"{prefix}{name}.")
    return paths


def _describe(error: Any) -> str:
    path = ".".join(str(p) for p in error["loc"])
    env = ENV_PREFIX + "__".join(str(p) for p in error["loc"]).upper()
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "unknown setting" + _closest(path, _field_paths(Settings))
    elif error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    value = error.get("input")
    # Never echo a secret back: URLs carry passwords.
    secret = str(error["loc"][-1]) in _SECRET_FIELDS
    hidden = secret or error["type"] == "extra_forbidden" or isinstance(value, dict)
    shown = "" if hidden else f" (got {value!r})"
    return f"invalid setting {path} ({env}): {message}{shown}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load and validate settings; every failure becomes one `SettingsError` line."""
    if config_file is not None:
        if not config_file.is_file():
            raise SettingsError(f"invalid setting {CONFIG_FILE_ENV}: no such file {str(config_file)!r}")
    else:
        named = os.environ.get(CONFIG_FILE_ENV)
        if named and not Path(named).is_file():
            raise SettingsError(f"invalid setting {CONFIG_FILE_ENV}: no such file {named!r}")
    unknown = _unknown_variable(os.environ)
    if unknown is not None:
        raise SettingsError(unknown)
    # The file of this load only: the process environment is left as it was (it may be shared).
    token = _CONFIG_FILE.set(None if config_file is None else str(config_file))
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise SettingsError(_describe(first) + more) from None
    except ValueError as exc:  # a malformed file or a JSON env value that does not parse
        raise SettingsError(f"invalid settings: {str(exc).splitlines()[0]}") from None
    finally:
        _CONFIG_FILE.reset(token)
    settings.topics.table_by_topic()
    return settings
