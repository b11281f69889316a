"""The catalog is the one registry of data types: schemas, settings and validators all follow it."""

from __future__ import annotations

import json

from mds_sink.config.resources import resource_dir
from mds_sink.config.settings import Settings
from mds_sink.core.catalog import CATALOG, TABLES, VALIDATORS

SCHEMAS = resource_dir("schemas")


def test_every_data_type_has_its_schema_and_its_key_fields_are_schema_fields() -> None:
    on_disk = {p.stem for p in SCHEMAS.glob("*.avsc")}
    assert {t.spec.record for t in CATALOG.values()} == on_disk
    for entry in CATALOG.values():
        fields = {f["name"] for f in json.loads((SCHEMAS / f"{entry.spec.record}.avsc").read_text())["fields"]}
        assert set(entry.key_fields) <= fields, entry.name


def test_one_topic_setting_per_data_type_with_the_catalog_default() -> None:
    topics = Settings().topics.model_dump()
    expected = {"dead_letter": "{topic}.dlq", "tenant_topics": False, **{name: t.topic for name, t in CATALOG.items()}}
    assert topics == expected


def test_the_derived_registries_are_views_of_the_catalog() -> None:
    assert {name: t.spec for name, t in CATALOG.items()} == TABLES
    assert {name: t.validate for name, t in CATALOG.items()} == VALIDATORS
