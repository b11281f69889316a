"""Where writer schemas come from: a Confluent-compatible registry, or the local schemas/ directory."""

from __future__ import annotations

import json
from pathlib import Path

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from mds_sink.avro.codec import AvroSchema, LocalSchemas, SchemaSource
from mds_sink.config.settings import Settings
from mds_sink.errors import SchemaNotFound, StartupError


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
