"""The `mds-sink` command: run the sink, administer its database, produce records, run the demo."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from mds_sink import __version__
from mds_sink.cli.admin import admin_app
from mds_sink.cli.backfill import backfill_app
from mds_sink.cli.common import confirm, fail, settings, use_config
from mds_sink.cli.control import query_app
from mds_sink.cli.dlq import dlq_app
from mds_sink.cli.progress import progress
from mds_sink.errors import BrokerUnavailable, InputError, SettingsError, StartupError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_enable=False)
schemas_app = typer.Typer(no_args_is_help=True, help="The Avro schemas the sink reads.")
offsets_app = typer.Typer(no_args_is_help=True, help="The consumer group's positions.")
app.add_typer(admin_app, name="admin")
app.add_typer(query_app, name="query")
app.add_typer(schemas_app, name="schemas")
app.add_typer(offsets_app, name="offsets")
app.add_typer(dlq_app, name="dlq")
app.add_typer(backfill_app, name="backfill")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file.")]


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(__version__)
        raise typer.Exit()


VersionOption = Annotated[
    bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
]


@app.callback()
def main_options(config: ConfigOption = None, version: VersionOption = False) -> None:
    """mds-sink: drains market-data topics from Kafka into PostgreSQL/TimescaleDB."""
    use_config(config)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def run() -> None:
    """Consume the configured topics into the database until SIGTERM/SIGINT."""
    from mds_sink.service import Service  # noqa: PLC0415  (keeps `admin` start-up light)

    s = settings()
    service = Service(s)
    service.install_signal_handlers()
    try:
        code = service.run()
    except StartupError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:
        # Nothing of the failed batch was committed: a restart re-delivers it. The traceback is in the log.
        logging.getLogger("mds_sink").exception("the sink stopped")
        raise fail(f"stopped: {exc}", 3) from None
    raise typer.Exit(code)


# -- schemas, offsets, produce ----------------------------------------------------------------------
@schemas_app.command("ids")
def schemas_ids() -> None:
    """Schema ids for registry-less mode: frame records with these (magic 0 + 4-byte id)."""
    from mds_sink.avro.codec import LocalSchemas  # noqa: PLC0415  (fastavro only for the commands using it)

    s = settings()
    source = LocalSchemas.from_dir(s.schemas)
    for schema_id, schema in sorted(source.by_id.items(), key=lambda kv: kv[1]["name"]):
        found = re.search(r"Schema version (\d+\.\d+)", schema.get("doc", ""))
        typer.echo(f"{schema_id:>10}  {schema['namespace']}.{schema['name']}  v{found[1] if found else '?'}")


@offsets_app.command("reset")
def offsets_reset(
    to: Annotated[str, typer.Option("--to", help="earliest")] = "earliest",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Reset the group to the beginning of its topics: Kafka offsets and the offsets ledger.

    Run it with every sink of the group stopped. Re-consuming is safe: upserts are idempotent.
    """
    from mds_sink.control.offsets import reset_group  # noqa: PLC0415

    if to != "earliest":
        raise fail("--to: only 'earliest' is supported")
    s = settings()
    confirm(
        f"reset group {s.kafka.group_id} to the earliest offsets of {', '.join(sorted(s.topics.table_by_topic()))}: "
        "every record is consumed again (the rows do not change)",
        yes,
    )
    try:
        reset = reset_group(s)
    except StartupError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"group {s.kafka.group_id}: {reset} partitions reset to earliest; offsets ledger cleared")


@app.command()
def produce(
    kind: Annotated[str, typer.Argument(help="bar, quote, fundamentals, news, option_snapshot or job_request")],
    file: Annotated[str, typer.Argument(help="NDJSON file (.gz too), or - for stdin")],
    topic: Annotated[str | None, typer.Option(help="Override the topic from settings.")] = None,
) -> None:
    """Publish NDJSON as Avro records in the sink's wire format; bad lines are reported and skipped."""
    from mds_sink.client.produce import count_lines, open_lines, publish, table_for  # noqa: PLC0415

    s = settings()
    try:
        spec = table_for(kind)
        lines = open_lines(file)
    except ValueError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from None
    try:
        with lines, progress(f"producing {spec.record} records", total=count_lines(file), unit="lines") as shown:
            done = publish(s, spec, lines, topic=topic, schemas_dir=s.schemas, progress=shown.advance)
    except BrokerUnavailable as exc:
        raise fail(str(exc), 1) from None
    except InputError as exc:
        raise fail(f"{file}: {exc}", 1) from None
    for error in done.bad_lines:
        typer.echo(f"{file}: {error}", err=True)
    skipped = f"; {len(done.bad_lines)} bad lines skipped" if done.bad_lines else ""
    typer.echo(f"produced {done.sent} {spec.record} records to {done.topic}{skipped}")
    if done.bad_lines:
        raise typer.Exit(1)


@app.command()
def demo() -> None:
    """Run the demo against the local stack: migrate, add tenants, sink the sample stream, show it."""
    from mds_sink.cli.demo import run_demo  # noqa: PLC0415

    s = settings()
    try:
        run_demo(s)
    except StartupError as exc:
        raise fail(str(exc)) from None


def config_first(argv: list[str]) -> list[str]:
    """`-c/--config FILE` wherever it is given (after the sub-command too) moved in front, where the
    top-level option that reads it is."""
    moved: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-c", "--config") and i + 1 < len(argv):
            moved += [arg, argv[i + 1]]
            i += 2
            continue
        if arg.startswith("--config="):
            moved.append(arg)
        elif arg == "--":  # what follows is data, never options
            rest += argv[i:]
            break
        else:
            rest.append(arg)
        i += 1
    return moved + rest


def main() -> None:
    try:
        app(args=config_first(sys.argv[1:]), prog_name="mds-sink")
    except SettingsError as exc:
        typer.echo(f"mds-sink: {exc}", err=True)
        sys.exit(2)


logging.captureWarnings(True)
