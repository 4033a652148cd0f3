"""Read-only HTTP server for one agent's latest snapshot.

`GET /v1/observation` (authenticated, response signed) returns `{"format", "served_at",
"observation"}`; `GET /healthz` returns "ok"; `GET /metrics` (unauthenticated) only when
given a metrics source.  Every other path is 404 and every other method 405.  Request
logging goes to the `reconciler.peer` logger at DEBUG, headers never.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from reconciler.model import NodeObservation
from reconciler.peer.auth import SIG_HEADER, AuthError, NonceCache, response_signature, verify_request

log = logging.getLogger("reconciler.peer")

OBSERVATION_PATH = "/v1/observation"
HEALTH_PATH = "/healthz"
ENVELOPE_FORMAT = 1
MAX_REQUEST_BODY = 4096

SnapshotSource = Callable[[], NodeObservation | None]
MetricsSource = Callable[[], tuple[bytes, str]]  # (exposition body, content type)
METRICS_PATH = "/metrics"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, host: str, port: int, secret: bytes, get_snapshot: SnapshotSource,
                 metrics: MetricsSource | None = None) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.secret = secret
        self.get_snapshot = get_snapshot
        self.metrics = metrics
        self.nonces = NonceCache()
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("peer server: connection from %s failed", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "reconciler-peer"
    sys_version = ""
    timeout = 5.0  # a stalled client cannot hold a thread for long

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("peer server: %s %s", self.address_string(), format % args)

    def __getattr__(self, name: str) -> Any:
        # Any method without a do_X handler (POST, PUT, FOO...) is 405, not 501.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._reply(405, _error_body("method not allowed"), headers={"Allow": "GET"})

    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._reply(200, b"ok\n", ctype="text/plain; charset=utf-8")
        elif self.path == OBSERVATION_PATH:
            self._observation()
        elif self.path == METRICS_PATH and self.server.metrics is not None:
            self._metrics(self.server.metrics)
        else:
            self._reply(404, _error_body("not found"))

    def _read_body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length < 0 or length > MAX_REQUEST_BODY:
            return None
        return self.rfile.read(length) if length else b""

    def _observation(self) -> None:
        body = self._read_body()
        if body is None:
            self._reply(400, _error_body("bad request body"))
            return
        try:
            nonce = verify_request(
                self.server.secret, self.command, self.path, self.headers.get("Authorization"), body, self.server.nonces
            )
        except AuthError as e:
            log.debug("peer server: refused request from %s: %s", self.address_string(), e)
            self._reply(401, _error_body(str(e)))
            return
        status, payload = _snapshot_payload(self.server.get_snapshot)
        sig = response_signature(self.server.secret, nonce, status, payload)
        self._reply(status, payload, headers={SIG_HEADER: sig})

    def _metrics(self, source: MetricsSource) -> None:
        try:
            body, ctype = source()
        except Exception:  # noqa: BLE001 - as for snapshots: never kill the server thread
            log.exception("peer server: rendering the metrics failed")
            self._reply(500, _error_body("metrics unavailable"))
            return
        self._reply(200, body, ctype=ctype)

    def _reply(self, status: int, body: bytes, ctype: str = "application/json", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _error_body(reason: str) -> bytes:
    return json.dumps({"error": reason}).encode()


def _snapshot_payload(get_snapshot: SnapshotSource) -> tuple[int, bytes]:
    try:
        snapshot = get_snapshot()
    except Exception:  # noqa: BLE001 - the agent's bug must not kill the server thread
        log.exception("peer server: reading the snapshot failed")
        return 500, _error_body("snapshot unavailable")
    if snapshot is None:
        return 503, _error_body("no snapshot yet")
    envelope = {
        "format": ENVELOPE_FORMAT,
        "served_at": time.time(),
        "observation": json.loads(snapshot.model_dump_json()),
    }
    return 200, json.dumps(envelope).encode()


class PeerServer:
    """Serves `get_snapshot()` to the peer agent from a daemon thread."""

    def __init__(self, bind_host: str, port: int, secret: bytes, get_snapshot: SnapshotSource,
                 metrics: MetricsSource | None = None) -> None:
        self.bind_host = bind_host
        self._metrics = metrics
        self._port = port
        self._secret = secret
        self._get_snapshot = get_snapshot
        self._bound: int | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when constructed with port 0)."""
        return self._bound if self._bound is not None else self._port

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("peer server already started")
        self._server = _Server(self.bind_host, self._port, self._secret, self._get_snapshot, self._metrics)
        self._bound = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="peer-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=2.0)

    def __enter__(self) -> PeerServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
