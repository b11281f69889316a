"""The data types the sink knows: one entry each, and every registry keyed by table name derived from it.

Adding a data type takes its Avro schema (schemas/), its migration, its table spec and validator, and
one entry here: the topic setting (`topics.<name>`), the partition key of collectors' records, the
validator and the table layout all follow from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mds_sink.core import validate
from mds_sink.core.tables import BARS, FUNDAMENTALS, JOBS, NEWS, OPTION_SNAPSHOTS, QUOTES, TableSpec
from mds_sink.core.validate import Record, Row, Rules


@dataclass(frozen=True, slots=True)
class DataType:
    spec: TableSpec
    validate: Callable[[Record, Rules], Row]
    # The natural ordering key of a record: records with the same key land in one partition.
    key_fields: tuple[str, ...]
    topic: str  # the default of the setting topics.<name>

    @property
    def name(self) -> str:
        return self.spec.name


_SERIES = ("tenant_id", "vendor", "symbol")

CATALOG: dict[str, DataType] = {
    t.name: t
    for t in (
        DataType(BARS, validate.bar, _SERIES, "mds.bars"),
        DataType(QUOTES, validate.quote, _SERIES, "mds.quotes"),
        DataType(FUNDAMENTALS, validate.fundamentals, _SERIES, "mds.fundamentals"),
        DataType(NEWS, validate.news, _SERIES, "mds.news"),
        DataType(OPTION_SNAPSHOTS, validate.option_snapshot, ("tenant_id", "vendor", "underlying"), "mds.options"),
        DataType(JOBS, validate.job_request, ("tenant_id", "idempotency_key"), "mds.jobs"),
    )
}

TABLES: dict[str, TableSpec] = {name: t.spec for name, t in CATALOG.items()}
VALIDATORS: dict[str, Callable[[Record, Rules], Row]] = {name: t.validate for name, t in CATALOG.items()}

# Physical tables whose every row belongs to one tenant; all are under RLS (or the tenant guard).
TENANT_TABLES: tuple[str, ...] = (
    *(t.table for spec in TABLES.values() for t in spec.physical),
    "latest_prices",
    "bar_gaps",
)
