"""What the side port and the control API's server share: the listening socket, the HTTP methods, and
the bounded request body."""

from __future__ import annotations

from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    # The standard library listens with a backlog of 5: a few idle keep-alive connections plus a burst
    # of scrapes and probes were enough to make a probe time out.
    request_queue_size = 128
    daemon_threads = True


class BadBody(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def body_length(content_length: str | None, limit: int) -> int:
    """The request body's length; BadBody if the header is malformed or negative (400) or over `limit` (413)."""
    try:
        length = int(content_length or 0)
    except ValueError:
        length = -1
    if length < 0:
        raise BadBody(HTTPStatus.BAD_REQUEST, "bad Content-Length")
    if length > limit:
        raise BadBody(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
    return length


class Methods(BaseHTTPRequestHandler):
    """Every method goes to `_dispatch`, which answers 405 for what a route does not take."""

    def _dispatch(self) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()
