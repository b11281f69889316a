"""What each target table looks like to the sink: columns, how they are staged, the natural key.

Rows travel from decode to COPY in their raw Avro representation (timestamps as int microseconds,
dates as int days, tenant ids as text): building Python datetime/UUID objects per record costs more
than the COPY itself, and the conversion is almost free in SQL (`from_stage`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

_TS = "timestamptz 'epoch' + {c} * interval '1 microsecond'"
_DATE = "date '1970-01-01' + {c}"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    pg_type: str
    stage_type: str
    from_stage: str = "{c}"  # SQL turning the staged value `{c}` into pg_type

    def expr(self, alias: str) -> str:
        return self.from_stage.format(c=f"{alias}.{self.name}")


def _ts(name: str) -> Column:
    return Column(name, "timestamptz", "bigint", _TS)


def _date(name: str) -> Column:
    return Column(name, "date", "integer", _DATE)


def _text(name: str) -> Column:
    return Column(name, "text", "text")


def _float(name: str) -> Column:
    return Column(name, "double precision", "double precision")


def _int(name: str, pg_type: str = "bigint") -> Column:
    # Staged as bigint whatever the column: an Avro int is read as any 64-bit value, and a binary
    # COPY into an integer column would wrap it silently; the INSERT's cast refuses it (22003).
    return Column(name, pg_type, "bigint")


_TENANT = Column("tenant_id", "uuid", "text", "{c}::uuid")


# latest_prices at an equal ts: the price taken nearest to ts wins (latest_prices.precedence, higher wins).
# A quote is a price at ts itself; a bar's ts is its start and its close the price at its end, ts plus
# its length. So a quote ranks above every bar (a 1m bar at 10:00 closes at 10:01, a quote at 10:00 is
# the 10:00 price), and bars rank from the shortest timeframe to the longest. Between two prices of one
# rank (one series) the newer values replace the stored ones, as corrections do. Frozen in migration
# 0005, which ranks the rows stored before it.
BAR_TIMEFRAMES_FINEST_FIRST = ("1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w")
BAR_PRECEDENCE = {tf: len(BAR_TIMEFRAMES_FINEST_FIRST) - i for i, tf in enumerate(BAR_TIMEFRAMES_FINEST_FIRST)}
QUOTE_PRECEDENCE = len(BAR_TIMEFRAMES_FINEST_FIRST) + 1


@dataclass(frozen=True, slots=True)
class LatestPriceFeed:
    """How rows of a table move latest_prices: SQL expressions over the written row.

    `precedence` ranks prices of an equal ts (higher wins): a constant, or a CASE over a column; no
    function call, as it is evaluated for every row a flush writes.
    """

    price: str
    bid: str
    ask: str
    source: str
    precedence: str
    only_if: str | None = None  # rows that may move the price (a kept crossed quote may not)


def _precedence_by(column: str, ranks: dict[str, int]) -> str:
    """A CASE giving each value of `column` its rank; the values are ours (validated), quoted as literals."""
    whens = " ".join(f"WHEN '{value}' THEN {rank}" for value, rank in ranks.items())
    return f"CASE {column} {whens} END"


@dataclass(frozen=True, slots=True)
class Target:
    """A physical table a batch is written to: every staged row, or those whose `column` is one of `values`."""

    table: str
    column: str | None = None
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any("'" in v for v in self.values):
            raise ValueError(f"{self.table}: a routing value cannot contain a quote")

    @property
    def where(self) -> str | None:
        if self.column is None:
            return None
        quoted = ", ".join(f"'{v}'" for v in self.values)
        return f"{self.column} IN ({quoted})"


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str  # the logical table: the topic setting `topics.<name>` and the record type's home
    record: str  # Avro schema file stem in schemas/
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    time_column: str | None  # the hypertable dimension; None for non-time-series tables
    on_conflict: Literal["update", "ignore"] = "update"
    # For an outbox ("ignore"): the columns that say which job a request is. A repeat of a key that
    # differs in them is not the same request again but a conflict, dead-lettered as job_key_conflict.
    conflict_columns: tuple[str, ...] = ()
    revision_column: str | None = None
    latest_price: LatestPriceFeed | None = None
    targets: tuple[Target, ...] = ()
    # Binary COPY formats a row in a fifth of the time of text, for client and server. Only for tables
    # whose every staged value has exactly its staged type (ints, floats, validated or plain text): the
    # text format lets psycopg refuse a NUL in free text before the server does, with the reason the
    # dead letters of news and jobs carry (db_data_error); a NUL in binary COPY is refused by the server.
    copy_binary: bool = False
    # Derived from the above once: every record's dedupe uses them, so they are not recomputed per call.
    column_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    column_index: dict[str, int] = field(init=False, repr=False, compare=False)
    key_of: Callable[[tuple[Any, ...]], tuple[Any, ...]] = field(init=False, repr=False, compare=False)
    revision_index: int | None = field(init=False, repr=False, compare=False)
    tenant_index: int = field(init=False, repr=False, compare=False)
    # Routed targets: the column deciding a row's target, and each of its values' place in `physical`.
    route_index: int | None = field(init=False, repr=False, compare=False)
    route_of: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(c.name for c in self.columns)
        index = tuple(names.index(k) for k in self.key)
        # itemgetter of two or more indexes returns the tuple itself; of one, the bare value.
        key_of = operator.itemgetter(*index) if len(index) > 1 else (lambda row: (row[index[0]],))
        revision = None if self.revision_column is None else names.index(self.revision_column)
        routes = {t.column for t in self.physical}
        if len(routes) != 1 or (None in routes and len(self.physical) > 1):
            raise ValueError(f"{self.name}: targets must all be routed by one column, or be a single target")
        column = routes.pop()
        route_of = {value: place for place, t in enumerate(self.physical) for value in t.values}
        for attr, value in (
            ("column_names", names),
            ("column_index", {n: i for i, n in enumerate(names)}),
            ("key_of", key_of),
            ("revision_index", revision),
            ("tenant_index", names.index("tenant_id")),
            ("route_index", None if column is None else names.index(column)),
            ("route_of", route_of),
        ):
            object.__setattr__(self, attr, value)

    @property
    def physical(self) -> tuple[Target, ...]:
        return self.targets or (Target(self.name),)

    def tenant_targets(self, rows: Iterable[tuple[Any, ...]]) -> dict[str, tuple[int, ...]]:
        """Each tenant of `rows`, with the places in `physical` of the tables its rows go to.

        A flush upserts into just those: a statement scans the staged rows once per target it names.
        """
        if self.route_index is None:
            return {tenant: (0,) for tenant in set(map(operator.itemgetter(self.tenant_index), rows))}
        places: dict[str, set[int]] = {}
        for tenant, value in set(map(operator.itemgetter(self.tenant_index, self.route_index), rows)):
            place = self.route_of.get(value)
            if place is None:  # validation admits only routed values; anything else would be lost
                raise ValueError(f"{self.name}: no table takes {self.column_names[self.route_index]} {value!r}")
            places.setdefault(tenant, set()).add(place)
        return {tenant: tuple(sorted(p)) for tenant, p in places.items()}

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


BARS = TableSpec(
    name="bars",
    record="bar",
    columns=(
        _ts("ts"),
        _TENANT,
        _text("vendor"),
        _text("symbol"),
        _text("timeframe"),
        _float("open"),
        _float("high"),
        _float("low"),
        _float("close"),
        _float("volume"),
        _float("vwap"),
        _int("trade_count"),
        _int("revision", "integer"),
    ),
    key=("ts", "tenant_id", "vendor", "symbol", "timeframe"),
    time_column="ts",
    revision_column="revision",
    copy_binary=True,
    latest_price=LatestPriceFeed(
        price="close",
        bid="NULL::double precision",
        ask="NULL::double precision",
        source="'bar'",
        precedence=_precedence_by("timeframe", BAR_PRECEDENCE),
    ),
    # Stored by timeframe class, each with its own chunking, compression and retention; `bars` is a view.
    targets=(
        Target("bars_minute", "timeframe", ("1m", "5m", "15m", "30m")),
        Target("bars_hour", "timeframe", ("1h", "4h")),
        Target("bars_day", "timeframe", ("1d", "1w")),
    ),
)

QUOTES = TableSpec(
    name="quotes",
    record="quote",
    columns=(
        _ts("ts"),
        _TENANT,
        _text("vendor"),
        _text("symbol"),
        _float("bid"),
        _float("ask"),
        _float("bid_size"),
        _float("ask_size"),
        _text("exchange"),
        _int("revision", "integer"),
    ),
    key=("ts", "tenant_id", "vendor", "symbol"),
    time_column="ts",
    revision_column="revision",
    copy_binary=True,
    latest_price=LatestPriceFeed(
        price="(bid + ask) / 2",
        bid="bid",
        ask="ask",
        source="'quote'",
        precedence=str(QUOTE_PRECEDENCE),
        only_if="bid < ask",
    ),
)

FUNDAMENTALS = TableSpec(
    name="fundamentals",
    record="fundamentals",
    columns=(
        _date("as_of"),
        _TENANT,
        _text("vendor"),
        _text("symbol"),
        _text("period"),
        _text("currency"),
        _float("total_assets"),
        _float("total_liabilities"),
        _float("revenue"),
        _float("net_income"),
        _float("eps"),
        _float("shares_outstanding"),
        _int("revision", "integer"),
    ),
    key=("as_of", "tenant_id", "vendor", "symbol", "period"),
    time_column="as_of",
    revision_column="revision",
)

NEWS = TableSpec(
    name="news",
    record="news",
    columns=(
        _ts("published_at"),
        _TENANT,
        _text("news_id"),
        _text("vendor"),
        _text("title"),
        _text("symbol"),
        _text("url"),
        _text("summary"),
        _float("sentiment_score"),
    ),
    key=("published_at", "tenant_id", "news_id"),
    time_column="published_at",
)

OPTION_SNAPSHOTS = TableSpec(
    name="option_snapshots",
    record="option_snapshot",
    columns=(
        _ts("ts"),
        _TENANT,
        _text("vendor"),
        _text("underlying"),
        _date("expiry"),
        _text("option_type"),
        _float("strike"),
        _float("iv"),
        _float("delta"),
        _float("gamma"),
        _float("theta"),
        _float("vega"),
        _int("open_interest"),
        _int("volume"),
        _float("spot"),
        _float("bid"),
        _float("ask"),
    ),
    key=("ts", "tenant_id", "vendor", "underlying", "expiry", "option_type", "strike"),
    time_column="ts",
)

JOBS = TableSpec(
    name="jobs",
    record="job_request",
    columns=(
        _TENANT,
        _text("idempotency_key"),
        _text("job_type"),
        Column("payload", "jsonb", "text", "{c}::jsonb"),
        _int("priority", "integer"),
        _ts("requested_at"),
        _text("requested_by"),
    ),
    key=("tenant_id", "idempotency_key"),
    time_column=None,
    on_conflict="ignore",  # an outbox: the first request for a key is the job; repeats change nothing
    conflict_columns=("job_type", "payload", "priority"),
)
