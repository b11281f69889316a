"""What every `mds-sink` sub-command shares: the settings of this invocation and one-line failures."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mds_sink.config.settings import Settings, load_settings
from mds_sink.errors import SettingsError
from mds_sink.logs import configure

_config: list[Path | None] = [None]  # the --config of this invocation, set by the top-level callback


def use_config(path: Path | None) -> None:
    _config[0] = path


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"mds-sink: {message}", err=True)
    return typer.Exit(code)


def confirm(question: str, yes: bool) -> None:
    """Go on only with --yes or a "yes" typed at a terminal; never on a closed or piped stdin."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise fail(f"{question}; no terminal to ask on: pass --yes to confirm")
    if not typer.confirm(f"{question}. Go on?", default=False, err=True):
        raise fail("nothing was changed", 1)


def settings() -> Settings:
    try:
        loaded = load_settings(_config[0])
    except SettingsError as exc:
        raise fail(str(exc)) from None
    configure(loaded.log.format, loaded.log.level)
    return loaded


def owner_url(s: Settings) -> str:
    try:
        return s.database.require_owner_url()
    except SettingsError as exc:
        raise fail(str(exc)) from None
