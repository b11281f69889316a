"""A test's HTTP client for the side port and the control API, and the check of an answer against the
OpenAPI document that describes it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openapi_schema_validator import OAS31Validator
from openapi_schema_validator import validate as validate_schema


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(base: str, method: str, path: str, body: Any, *, token: str | None, timeout_s: float) -> Reply:
    """One request; a body of bytes is sent as it is, anything else as JSON."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    sent = urllib.request.Request(base + path, data=data, method=method)
    if token is not None:
        sent.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        sent.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(sent, timeout=timeout_s) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, dict(error.headers), error.read())


def inline(spec: Mapping[str, Any], node: Any) -> Any:
    """`node` with every local $ref of `spec` replaced by what it points at."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return inline(spec, target)
        return {k: inline(spec, v) for k, v in node.items()}
    if isinstance(node, list):
        return [inline(spec, v) for v in node]
    return node


def check_documented(spec: Mapping[str, Any], method: str, template: str, reply: Reply) -> None:
    """The status is one the document lists for this operation, and a JSON body matches its schema."""
    responses = inline(spec, spec["paths"][template][method.lower()]["responses"])
    assert str(reply.status) in responses, f"{method} {template} answered {reply.status}: {reply.body[:300]!r}"
    content = responses[str(reply.status)].get("content", {})
    if "application/json" in content:
        validate_schema(reply.json(), content["application/json"]["schema"], cls=OAS31Validator)
