"""docs/control-api.yaml and the control API's routes describe the same API; the transport's rules.

tests/integration/control/test_control_api.py calls every path over real HTTP and checks the answers
against the description.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from openapi_spec_validator import validate
from pydantic import SecretStr

from mds_sink.control.api import ROUTE_TABLE
from mds_sink.errors import StartupError
from mds_sink.http.api import Routes, is_loopback, match, serve
from tests.observability import load_yaml

CONTROL_API = Path(__file__).resolve().parents[3] / "docs" / "control-api.yaml"


def operations() -> dict[tuple[str, str], dict[str, object]]:
    spec = load_yaml(CONTROL_API)
    return {
        (path, method.upper()): op
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method != "parameters"
    }


def test_the_description_is_valid_openapi() -> None:
    validate(load_yaml(CONTROL_API))


def test_every_described_operation_is_served_and_every_served_one_described() -> None:
    served = {(path, method) for path, methods in ROUTE_TABLE.items() for method in methods}
    assert set(operations()) == served


def test_exactly_the_protected_operations_need_the_token_and_document_refusals() -> None:
    for (path, method), op in operations().items():
        protected = ROUTE_TABLE[path][method][1]
        assert ("security" in op) == protected, f"{method} {path}"
        responses = op["responses"]
        assert isinstance(responses, dict)
        assert ({"401", "403"} <= set(responses)) == protected, f"{method} {path}"
    # Every mutating route is protected.
    assert all(protected for methods in ROUTE_TABLE.values() for m, (_, protected) in methods.items() if m != "GET")


def test_paths_match_literal_routes_before_templates() -> None:
    def handler(_p: object, _q: object, _b: bytes) -> tuple[int, object, dict[str, str]]:
        return 200, {}, {}

    routes: Routes = {"/backfill": {"GET": (handler, True)}, "/backfill/{job}": {"GET": (handler, True)}}
    assert match(routes, "/backfill") == (routes["/backfill"], {})
    assert match(routes, "/backfill/abc") == (routes["/backfill/{job}"], {"job": "abc"})
    assert match(routes, "/backfill/abc/x") is None
    assert match(routes, "/nothing") is None


def test_it_listens_elsewhere_than_loopback_only_with_a_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.org")
    with pytest.raises(StartupError, match=r"^h is 0\.0\.0\.0, not a loopback address: set t \(a bearer token"):
        serve({}, host="0.0.0.0", port=0, token=None, host_setting="h", token_setting="t")
    server = serve({}, host="0.0.0.0", port=0, token=SecretStr("x" * 40), host_setting="h", token_setting="t")
    server.stop()
