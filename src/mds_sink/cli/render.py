"""The one renderer of the command line: plain text tables for terminals, and JSON for scripts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _json(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, count: bool = False) -> str:
    """Columns aligned under a dashed rule; `count` adds "(N rows)" below."""
    cells = [list(header), *([_text(v) for v in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if count:
        lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def json_rows(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """One object per row, keyed by the header; dates and UUIDs as strings."""
    return json.dumps([{c: _json(v) for c, v in zip(header, row, strict=True)} for row in rows], indent=2)
