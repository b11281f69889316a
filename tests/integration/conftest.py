"""Integration tests run against the real local stack: started here if it is not running.

A stack that cannot start fails the session; nothing is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mds_sink.config.settings import load_settings
from mds_sink.db import migrate
from tests.support import parse_exports, stack


@pytest.fixture(scope="session", autouse=True)
def local_stack() -> Iterator[dict[str, str]]:
    env = parse_exports(stack("up"))
    missing = {"MDS_SINK_KAFKA__BOOTSTRAP_SERVERS", "MDS_SINK_DATABASE__URL", "MDS_SINK_DATABASE__OWNER_URL"} - set(env)
    if missing:
        pytest.fail(f"deploy/local/stack.sh up did not export {sorted(missing)}")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    migrate.upgrade(load_settings())
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
