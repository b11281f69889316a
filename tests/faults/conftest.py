"""Fault tests restart and stall servers, so they get a stack of their own (other ports, other data).

The stack is started for this package and stopped after it; nothing else shares it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mds_sink.config.settings import load_settings
from mds_sink.db import migrate
from tests.support import parse_exports, stack

FAULT_STACK = {
    "MDS_STACK_DIR": "/tmp/mds-sink-faults",
    "MDS_STACK_KAFKA_PORT": "39192",
    "MDS_STACK_KAFKA_CONTROLLER_PORT": "39193",
    "MDS_STACK_KAFKA_SASL_PORT": "39194",
    "MDS_STACK_PG_PORT": "55532",
}


@pytest.fixture(scope="package", autouse=True)
def fault_stack() -> Iterator[dict[str, str]]:
    saved = {k: os.environ.get(k) for k in FAULT_STACK}
    os.environ.update(FAULT_STACK)
    env = parse_exports(stack("up"))
    saved.update({k: os.environ.get(k) for k in env if k not in saved})
    os.environ.update(env)
    try:
        migrate.upgrade(load_settings())
        yield env
    finally:
        stack("down")
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
