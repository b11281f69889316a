"""Where the bundled schemas/, migrations/ and samples/ are, in a source checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # config/ -> mds_sink/
_SOURCE_ROOT = _PACKAGE.parent.parent  # src/mds_sink -> repository root


def resource_dir(name: str) -> Path:
    """The directory `name` (schemas, migrations, samples): the checkout's own, else the wheel's copy."""
    for candidate in (_SOURCE_ROOT / name, _PACKAGE / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{name}/ is neither in the source tree nor in the installed package")
