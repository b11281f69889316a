"""The exchange calendars gap detection needs, built in a child process.

exchange_calendars brings pandas and numpy with it: about 60 MB of resident memory for the life of
the sink, to read a few thousand sessions once. A short-lived child reads them and hands back plain
lists (core/calendars.Sessions), so the sink never imports pandas.

Run as a module it is that child: `python -m mds_sink.sink.calendar_loader XNYS XASX` prints the
calendars as JSON on standard output, or one line naming an unknown calendar on standard error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import asdict

from mds_sink.core.calendars import Sessions, UnknownCalendar, build, install

_TIMEOUT_S = 120.0


def preload(names: Iterable[str]) -> None:
    """Build every calendar named, in a child process, and install them. Raises UnknownCalendar."""
    wanted = sorted(set(names))
    if not wanted:
        return
    done = subprocess.run(
        [sys.executable, "-m", __name__, *wanted], capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
    )
    if done.returncode == 2:
        raise UnknownCalendar(done.stderr.strip())
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"building the exchange calendars {', '.join(wanted)} failed: {last}")
    for fields in json.loads(done.stdout):
        install(Sessions(**fields))


def main(names: list[str]) -> int:
    try:
        built = [asdict(build(name)) for name in names]
    except UnknownCalendar as exc:
        print(exc, file=sys.stderr)
        return 2
    json.dump(built, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
