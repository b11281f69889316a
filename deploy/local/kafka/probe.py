#!/usr/bin/env python3
"""Dependency-free Kafka readiness probe used by deploy/local/stack.sh.

Sends ApiVersions (v0) and then a Metadata request (a non-flexible version,
4..8) to one broker and succeeds when the broker answers with at least one
live broker in the cluster metadata, i.e. it has joined the KRaft quorum and
serves client requests.  Stdlib only, so it works before any Python Kafka
client is installed.

Exit codes: 0 ready, 1 not ready (connection refused, timeout, no brokers),
2 the broker speaks no Metadata version this probe knows (caller falls back
to the Java tools).
"""

from __future__ import annotations

import socket
import struct
import sys

API_METADATA = 3
API_VERSIONS = 18
CLIENT_ID = b"mds-stack-probe"


class NotReady(Exception):
    pass


class Unsupported(Exception):
    pass


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    header = struct.pack(">hhih", api_key, version, corr, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    data = _recv_exact(sock, size)
    (got_corr,) = struct.unpack_from(">i", data, 0)
    if got_corr != corr:
        raise NotReady(f"correlation id mismatch ({got_corr} != {corr})")
    return data[4:]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise NotReady("connection closed by broker")
        buf += chunk
    return bytes(buf)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, fmt: str):
        vals = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return vals[0]

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def nullable_string(self):
        n = self.int16()
        if n < 0:
            return None
        s = self.data[self.pos : self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return s


def probe(host: str, port: int, timeout: float) -> str:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise NotReady(f"cannot connect to {host}:{port}: {exc}") from exc
    with sock:
        sock.settimeout(timeout)
        try:
            # ApiVersions v0: empty body. Even when a version is unsupported the
            # broker answers in v0 format with the list of supported ranges.
            r = _Reader(_request(sock, API_VERSIONS, 0, 1, b""))
            error = r.int16()
            ranges = {}
            for _ in range(r.int32()):
                key, lo, hi = r.int16(), r.int16(), r.int16()
                ranges[key] = (lo, hi)
            if API_METADATA not in ranges:
                raise NotReady(f"ApiVersions error {error}, no Metadata api listed")
            lo, hi = ranges[API_METADATA]
            version = min(hi, 8)
            if version < max(lo, 4):
                raise Unsupported(f"broker Metadata versions {lo}..{hi}")
            # Metadata v4..v8 request: topics=null (all), allow_auto_topic_creation=false,
            # v8 adds two "include authorized operations" booleans.
            body = struct.pack(">ib", -1, 0)
            if version >= 8:
                body += struct.pack(">bb", 0, 0)
            r = _Reader(_request(sock, API_METADATA, version, 2, body))
            r.int32()  # throttle_time_ms
            brokers = []
            for _ in range(r.int32()):
                node_id, host_, port_ = r.int32(), r.nullable_string(), r.int32()
                r.nullable_string()  # rack
                brokers.append(f"{node_id}@{host_}:{port_}")
            cluster_id = r.nullable_string()
        except (OSError, struct.error) as exc:
            raise NotReady(f"request failed: {exc}") from exc
    if not brokers:
        raise NotReady("metadata lists no live brokers yet")
    return f"cluster_id={cluster_id} brokers={','.join(brokers)} metadata_v={version}"


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: probe.py HOST:PORT [TIMEOUT_SECONDS]", file=sys.stderr)
        return 64
    host, _, port = argv[1].rpartition(":")
    timeout = float(argv[2]) if len(argv) == 3 else 3.0
    try:
        print(probe(host, int(port), timeout))
    except NotReady as exc:
        print(f"not ready: {exc}", file=sys.stderr)
        return 1
    except Unsupported as exc:
        print(f"unsupported: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
