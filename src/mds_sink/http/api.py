"""A small JSON HTTP server for a table of routes: the transport of the control API (`admin serve`).

It knows nothing of what the routes do (control.api gives them, cli.serve puts the two together):
it matches paths with `{name}` segments, requires the bearer token on the routes that say so
(compared in constant time, as the side port does), bounds request bodies and times, and answers JSON.
It listens on loopback unless told otherwise, and refuses any other address without a token.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import SecretStr

from mds_sink import __version__
from mds_sink.errors import StartupError
from mds_sink.http.base import BadBody, Methods, Server, body_length
from mds_sink.http.server import authenticate

log = logging.getLogger(__name__)

# A route's handler: (path parameters, query parameters, body) -> (status, JSON-able body or bytes, headers).
# A bytes body is sent as it is, with the Content-Type its headers give.
Handler = Callable[[Mapping[str, str], Mapping[str, str], bytes], tuple[int, Any, dict[str, str]]]
Routes = Mapping[str, Mapping[str, tuple[Handler, bool]]]  # path -> method -> (handler, needs the token)

MAX_BODY_BYTES = 16 * 1024
REQUEST_TIMEOUT_S = 10.0
REALM = 'Bearer realm="mds-sink control"'


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    return status, payload, headers or {}


def match(routes: Routes, path: str) -> tuple[Mapping[str, tuple[Handler, bool]], dict[str, str]] | None:
    """The route of a path and its `{name}` parameters; a literal route wins over a template."""
    found = routes.get(path)
    if found is not None:
        return found, {}
    parts = path.strip("/").split("/")
    for template, methods in routes.items():
        pattern = template.strip("/").split("/")
        if len(pattern) != len(parts) or "{" not in template:
            continue
        params: dict[str, str] = {}
        for want, got in zip(pattern, parts, strict=True):
            if want.startswith("{") and want.endswith("}") and got:
                params[want[1:-1]] = got
            elif want != got:
                break
        else:
            return methods, params
    return None


def _handler(routes: Routes, token: SecretStr | None, token_setting: str) -> type[BaseHTTPRequestHandler]:
    class Handler(Methods):
        server_version = f"mds-sink-control/{__version__}"
        timeout = REQUEST_TIMEOUT_S

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

        def _send(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body, indent=1).encode() + b"\n"
            self.send_response(status)
            self.send_header("Content-Type", headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            for name, value in headers.items():
                if name != "Content-Type":
                    self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _refused(self, path: str) -> tuple[int, Any, dict[str, str]] | None:
            if token is None:
                return _json(HTTPStatus.FORBIDDEN, {"error": f"this route is disabled: {token_setting} is not set"})
            refusal = authenticate(token, self.headers.get("Authorization"))
            if refusal is None:
                return None
            if refusal.status == HTTPStatus.FORBIDDEN:
                log.warning("control API: wrong token from %s for %s %s", self.client_address[0], self.command, path)
            headers = {**refusal.headers, "Content-Type": refusal.content_type}
            if "WWW-Authenticate" in headers:
                headers["WWW-Authenticate"] = REALM
            return refusal.status, refusal.body, headers

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            found = match(routes, url.path)
            if found is None:
                self._send(*_json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {url.path}"}))
                return
            methods, params = found
            route = methods.get(self.command)
            if route is None:
                allowed = ", ".join(sorted(methods))
                self._send(
                    HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"use {allowed} for {url.path}"}, {"Allow": allowed}
                )
                return
            handle, protected = route
            if protected:
                refused = self._refused(url.path)
                if refused is not None:
                    self._send(*refused)
                    return
            try:
                length = body_length(self.headers.get("Content-Length"), MAX_BODY_BYTES)
            except BadBody as bad:
                self._send(*_json(bad.status, {"error": bad.message}))
                return
            body = self.rfile.read(length) if length else b""
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                reply = handle(params, query, body)
            except Exception:
                log.exception("control API: %s %s failed", self.command, url.path)
                reply = _json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
            if protected:
                log.info("control API: %s %s from %s: %d", self.command, url.path, self.client_address[0], reply[0])
            self._send(*reply)

    return Handler


@dataclass
class ApiServer:
    server: ThreadingHTTPServer

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(
    routes: Routes, *, host: str, port: int, token: SecretStr | None, host_setting: str, token_setting: str
) -> ApiServer:
    """Listen and answer in threads; StartupError (one line, naming the settings) if it may not or cannot."""
    if token is None and not is_loopback(host):
        raise StartupError(
            f"{host_setting} is {host}, not a loopback address: set {token_setting} (a bearer token of at least "
            "32 characters) before listening where others can connect"
        )
    try:
        server = Server((host, port), _handler(routes, token, token_setting))
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port} ({host_setting}): {exc.strerror or exc}") from None
    threading.Thread(target=server.serve_forever, name="mds-control-api", daemon=True).start()
    return ApiServer(server)
