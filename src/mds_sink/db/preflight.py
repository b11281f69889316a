"""Start-up checks: refuse to run against a database or registry that would break the guarantees."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from mds_sink.avro.codec import AvroSchema, LocalSchemas, SchemaSource
from mds_sink.config.settings import Settings
from mds_sink.core.tables import TENANT_TABLES
from mds_sink.db import migrate
from mds_sink.errors import SchemaNotFound, StartupError


def describe_dsn(url: str) -> str:
    """host:port/db as user, without the password."""
    info = conninfo_to_dict(url)
    host, port = info.get("host", "localhost"), info.get("port", 5432)
    return f"{host}:{port}/{info.get('dbname', '')} as {info.get('user', '?')}"


ROLE_CHECK = """
SELECT r.rolsuper, r.rolbypassrls,
       (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid AND c.relnamespace = 'public'::regnamespace)
FROM pg_roles r WHERE r.rolname = current_user
"""

RLS_CHECK = """
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
       -- guard mode: both triggers (new rows, and rows being updated), and enabled
       (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgenabled <> 'D'
         AND t.tgname IN ('tenant_guard', 'tenant_guard_old')) = 2
FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s)
"""


def check_database(settings: Settings, pool: ConnectionPool) -> str:
    """Reachable, at the code's head revision, a writer role that cannot bypass tenant isolation."""
    where = describe_dsn(settings.database.url.get_secret_value())
    try:
        pool.open(wait=True, timeout=settings.database.connect_timeout_s + 1)
    except Exception as exc:
        raise StartupError(f"cannot reach the database at {where}: {str(exc).splitlines()[0]}") from None
    head = migrate.head_revision(settings)
    with pool.connection() as conn:
        try:
            current = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except psycopg.errors.UndefinedTable:
            current = None
        if current is None or current[0] != head:
            at = "an empty schema" if current is None else f"revision {current[0]}"
            raise StartupError(
                f"the database at {where} is at {at}; this mds-sink needs revision {head}: run `mds-sink admin migrate`"
            )
        superuser, bypass, owned = conn.execute(ROLE_CHECK).fetchone() or (False, False, 0)
        if superuser or bypass or owned:
            what = "is a superuser" if superuser else "has BYPASSRLS" if bypass else f"owns {owned} relations"
            raise StartupError(
                f"the writer role at {where} {what}: tenant isolation would not hold; "
                "use a role without it (see deploy/local/stack.sh)"
            )
        for name, rls, forced, guarded in conn.execute(RLS_CHECK, (list(TENANT_TABLES),)).fetchall():
            if not guarded and not (rls and forced):
                raise StartupError(f"table {name} has neither forced row-level security nor the tenant guard")
    return str(head)


class RegistrySchemas:
    """Writer schemas from a Confluent-compatible registry, fetched by id once and cached."""

    def __init__(self, url: str) -> None:
        self._client = SchemaRegistryClient({"url": url})
        self._cache: dict[int, AvroSchema] = {}

    def writer_schema(self, schema_id: int) -> AvroSchema:
        cached = self._cache.get(schema_id)
        if cached is not None:
            return cached
        retrying = Retrying(
            retry=retry_if_exception_type(SchemaRegistryError),
            stop=stop_after_delay(60),
            wait=wait_exponential_jitter(multiplier=0.2, max=5),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                try:
                    schema = self._client.get_schema(schema_id)
                except SchemaRegistryError as exc:
                    if exc.http_status_code == 404:
                        raise SchemaNotFound(f"schema id {schema_id} is unknown to the registry") from None
                    raise
        if schema.schema_str is None:
            raise SchemaNotFound(f"schema id {schema_id} has no schema text in the registry")
        loaded: AvroSchema = json.loads(schema.schema_str)
        self._cache[schema_id] = loaded
        return loaded

    def close(self) -> None:
        self._client.close()


def open_schema_source(settings: Settings, schemas_dir: Path) -> SchemaSource:
    if settings.kafka.schema_registry_url:
        return RegistrySchemas(settings.kafka.schema_registry_url)
    if not schemas_dir.is_dir():
        raise StartupError(f"schemas directory {schemas_dir} does not exist (setting schemas_dir)")
    return LocalSchemas.from_dir(schemas_dir)
