"""Registering the sink's schemas with a Confluent-compatible Schema Registry (producer side)."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient


def register_value_schema(url: str, topic: str, schema_file: Path) -> int:
    """Register (or find) the schema under the topic's `-value` subject; returns its id."""
    with SchemaRegistryClient({"url": url}) as client:
        registered: int = client.register_schema(f"{topic}-value", Schema(schema_file.read_text(), "AVRO"))
    return registered
