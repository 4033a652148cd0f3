"""Read-only HTTP server for one agent's latest snapshot.

`GET /v1/observation` (authenticated, response signed) returns `{"format", "served_at",
"observation"}`; `GET /healthz` returns "ok"; `GET /metrics` (unauthenticated) only when
given a metrics source.  Every other path is 404 and every other method 405.  Request
logging goes to the `reconciler.peer` logger at DEBUG, headers never.

Anyone who can reach the port must not be able to starve the agent, so:

- **Who is answered**: the peer's address(es) and this host only: 127.0.0.1, ::1 and the
  address the server is bound to (a local client connecting to the node's address has it
  as its source).  IPv4-mapped IPv6 forms count as their IPv4 address; the rest of
  127.0.0.0/8 is *not* loopback here.  Any other source is closed (RST) at accept, before
  a byte is read.  The kernel does not accept a loopback or local source address from
  outside, so only the peer is answered from the network.
- **How many at once**: at most `MAX_PER_SOURCE` requests in flight per source address;
  one more from that source is closed at accept.  So at most MAX_PER_SOURCE x (number of
  allowed addresses: 4 with one peer) handler threads and sockets exist at any time, far
  below RLIMIT_NOFILE, and a flood from this host cannot take the peer's slots.
- **How long**: one deadline per connection, `deadline_s` from accept, for reading the
  request line, headers and body and for writing the reply; a client that sends one byte
  a second is cut off there, not after 5 s of silence per read.  Making the snapshot is
  not interrupted, but a reply whose deadline passed meanwhile is not sent.
"""

from __future__ import annotations

import errno
import io
import ipaddress
import json
import logging
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any

from reconciler.model import NodeObservation
from reconciler.peer.auth import SIG_HEADER, AuthError, NonceCache, response_signature, verify_request

log = logging.getLogger("reconciler.peer")

OBSERVATION_PATH = "/v1/observation"
HEALTH_PATH = "/healthz"
ENVELOPE_FORMAT = 1
MAX_REQUEST_BODY = 4096
REQUEST_DEADLINE_S = 5.0  # from accept to the last byte of the reply
MAX_PER_SOURCE = 4  # requests in flight per allowed source address
LOOPBACK = frozenset({"127.0.0.1", "::1"})
REFUSAL_LOG_INTERVAL_S = 60.0

SnapshotSource = Callable[[], NodeObservation | None]
MetricsSource = Callable[[], tuple[bytes, str]]  # (exposition body, content type)
PeerAddresses = Iterable[str] | Callable[[], Iterable[str]]
METRICS_PATH = "/metrics"


def canonical_address(host: str) -> str | None:
    """The address as compared with the allowed ones: no zone, IPv4-mapped as IPv4; None if not an IP."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("request deadline passed")
    return left


class _DeadlineReader(io.RawIOBase):
    """Socket input where every read waits at most until the one deadline of the request."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(_remaining(self._deadline))
        return self._sock.recv_into(buffer)


class _DeadlineWriter(io.BufferedIOBase):
    """Socket output; sendall as a whole must finish by the request's deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock, self._deadline = sock, deadline

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.settimeout(_remaining(self._deadline))
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


def _drop(sock: socket.socket) -> None:
    """Close at once with a reset: nothing read, nothing answered, no TIME_WAIT left here."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Server(socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 1024  # a burst of connects waits in the kernel (no descriptor) rather than being dropped

    def __init__(self, host: str, port: int, secret: bytes, get_snapshot: SnapshotSource,
                 metrics: MetricsSource | None = None, peers: PeerAddresses = (),
                 deadline_s: float = REQUEST_DEADLINE_S) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.secret = secret
        self.get_snapshot = get_snapshot
        self.metrics = metrics
        self.nonces = NonceCache()
        self.deadline_s = deadline_s
        self._peers = peers
        self._local = LOOPBACK | {a for a in (canonical_address(host),) if a is not None}
        self._lock = threading.Lock()
        self._inflight: dict[str, int] = {}
        self._open: set[socket.socket] = set()
        self._refused: dict[str, int] = {}
        self._refusals_logged = 0.0
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    # ---- who, how many, how long ------------------------------------------------------------
    def allowed(self) -> frozenset[str]:
        peers = self._peers() if callable(self._peers) else self._peers
        return frozenset(self._local | {a for a in map(canonical_address, peers) if a is not None})

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log.warning("peer server: cannot accept: %s", e.strerror)
                time.sleep(0.05)  # the connection waits in the backlog; do not spin
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        deadline = time.monotonic() + self.deadline_s
        source = canonical_address(str(client_address[0]))
        if source is None or source not in self.allowed():
            self._note_refusal("address not allowed")
            _drop(request)
            return
        with self._lock:
            busy = self._inflight.get(source, 0) >= MAX_PER_SOURCE
            if not busy:
                self._inflight[source] = self._inflight.get(source, 0) + 1
                self._open.add(request)
        if busy:
            self._note_refusal(f"{MAX_PER_SOURCE} requests from {source} in flight")
            _drop(request)
            return
        thread = threading.Thread(target=self._serve_one, args=(request, client_address, source, deadline),
                                  name="peer-request", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # cannot start a thread: refuse this one, keep accepting
            self._release(request, source)
            _drop(request)

    def _serve_one(self, request: socket.socket, client_address: Any, source: str, deadline: float) -> None:
        try:
            _Handler(request, client_address, self, deadline)
        except Exception:  # noqa: BLE001 - one bad request never ends the server
            self.handle_error(request, client_address)
        finally:
            self._release(request, source)
            self.shutdown_request(request)

    def _release(self, request: socket.socket, source: str) -> None:
        with self._lock:
            self._open.discard(request)
            left = self._inflight.get(source, 0) - 1
            if left > 0:
                self._inflight[source] = left
            else:
                self._inflight.pop(source, None)

    def _note_refusal(self, why: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._refused[why] = self._refused.get(why, 0) + 1
            if now - self._refusals_logged < REFUSAL_LOG_INTERVAL_S:
                return
            refused, self._refused, self._refusals_logged = self._refused, {}, now
        log.warning("peer server: closed connections at accept: %s",
                    "; ".join(f"{n} ({why})" for why, n in sorted(refused.items())))

    def in_flight(self) -> int:
        with self._lock:
            return sum(self._inflight.values())

    def server_close(self) -> None:
        super().server_close()
        with self._lock:  # a handler removes its socket under the lock before closing it
            for sock in self._open:  # wake handlers blocked on a read; they end at once
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("peer server: connection from %s failed", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "reconciler-peer"
    sys_version = ""

    def __init__(self, request: socket.socket, client_address: Any, server: _Server,
                 deadline: float | None = None) -> None:
        self.deadline = time.monotonic() + server.deadline_s if deadline is None else deadline
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        # Not StreamRequestHandler.setup: its timeout would apply to each read, and a client
        # sending a byte every few seconds could hold the connection for ever.
        self.connection = self.request
        self.rfile = io.BufferedReader(_DeadlineReader(self.request, self.deadline))
        self.wfile = _DeadlineWriter(self.request, self.deadline)

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
    """Serves `get_snapshot()` to the peer agent from a daemon thread.

    `peers`: the peer's address(es), or a callable read at each accept (so a reloaded spec
    takes effect); with none, only this host is answered.  `deadline_s`: the whole-request
    deadline; make it no shorter than the peer's fetch timeout, or slow snapshots go unanswered.
    """

    def __init__(self, bind_host: str, port: int, secret: bytes, get_snapshot: SnapshotSource,
                 metrics: MetricsSource | None = None, *, peers: PeerAddresses = (),
                 deadline_s: float = REQUEST_DEADLINE_S) -> None:
        if deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        self.bind_host = bind_host
        self._peers = peers
        self._deadline_s = deadline_s
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
        self._server = _Server(self.bind_host, self._port, self._secret, self._get_snapshot, self._metrics,
                              self._peers, self._deadline_s)
        self._bound = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="peer-server", daemon=True
        )
        self._thread.start()

    def in_flight(self) -> int:
        """Requests being served now (0 when not started)."""
        return self._server.in_flight() if self._server is not None else 0

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
