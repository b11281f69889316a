"""The `mds-sink` command line: typer only, one module per command group."""

from mds_sink.cli.app import app, main

__all__ = ["app", "main"]
