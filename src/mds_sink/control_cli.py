"""`mds-sink admin policies|aggregates|retention` and `mds-sink query`: the control plane's commands."""

from __future__ import annotations

import typer

policies_app = typer.Typer(no_args_is_help=True, help="TimescaleDB hypertables, compression and isolation modes.")
aggregates_app = typer.Typer(no_args_is_help=True, help="Continuous aggregates (5m, 1h, 1d bars from 1m bars).")
retention_app = typer.Typer(no_args_is_help=True, help="Retention of old rows.")
query_app = typer.Typer(no_args_is_help=True, help="Read helpers for operators, as the read-only role.")
