"""docs/openapi.yaml and the side port's routes describe the same API.

tests/integration/test_http.py calls every path of the description over real HTTP.
"""

from __future__ import annotations

from openapi_spec_validator import validate

from mds_sink.http.server import ROUTES
from tests.observability import OPENAPI, load_yaml


def operations() -> dict[tuple[str, str], dict[str, object]]:
    spec = load_yaml(OPENAPI)
    return {(path, method.upper()): op for path, item in spec["paths"].items() for method, op in item.items()}


def test_the_description_is_valid_openapi() -> None:
    validate(load_yaml(OPENAPI))


def test_every_described_operation_is_served_and_every_served_one_described() -> None:
    served = {(path, method) for path, methods in ROUTES.items() for method in methods}
    assert set(operations()) == served


def test_exactly_the_admin_operations_need_the_token_and_document_refusals() -> None:
    for (path, method), op in operations().items():
        admin = ROUTES[path][method].admin
        assert ("security" in op) == admin, f"{method} {path}"
        assert path.startswith("/admin/") == admin, f"{method} {path}"
        responses = op["responses"]
        assert isinstance(responses, dict)
        if admin:
            assert {"401", "403"} <= set(responses), f"{method} {path}"
