"""Peer channel: real sockets on 127.0.0.1, ephemeral ports, servers always stopped."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.model import DrbdObs, NodeObservation
from reconciler.peer import PeerServer, SecretError, fetch_peer, load_secret
from reconciler.peer.auth import SIG_HEADER, response_signature, sign_request
from reconciler.peer.server import OBSERVATION_PATH

SECRET = b"correct horse battery staple 0123"
OTHER = b"another secret, just as long 4567"
HOST = "127.0.0.1"

SNAPSHOT = NodeObservation(
    node="alpha",
    spec_digest="sha256:abc",
    drbd={"r0": DrbdObs(configured=True, role="Primary", connection="Connected", disk="UpToDate")},
)


@pytest.fixture
def server() -> Iterator[PeerServer]:
    srv = PeerServer(HOST, 0, SECRET, lambda: SNAPSHOT)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --- round trip and authentication -------------------------------------------------


def test_round_trip(server: PeerServer) -> None:
    result = fetch_peer(HOST, server.port, SECRET)
    assert result.reachable, result.reason
    assert result.observation == SNAPSHOT
    assert result.reason is None


def test_expect_node_mismatch(server: PeerServer) -> None:
    result = fetch_peer(HOST, server.port, SECRET, expect_node="beta")
    assert not result.reachable and "expected 'beta'" in result.reason


def test_no_snapshot_yet_is_unreachable() -> None:
    with PeerServer(HOST, 0, SECRET, lambda: None) as srv:
        result = fetch_peer(HOST, srv.port, SECRET)
    assert not result.reachable and "503" in result.reason and "no snapshot" in result.reason


def test_snapshot_source_raising_is_unreachable() -> None:
    def boom() -> NodeObservation:
        raise RuntimeError("observer crashed")

    with PeerServer(HOST, 0, SECRET, boom) as srv:
        result = fetch_peer(HOST, srv.port, SECRET)
        assert fetch_peer(HOST, srv.port, SECRET).reason == result.reason  # server still alive
    assert not result.reachable and "500" in result.reason


def test_wrong_client_secret_unreachable(server: PeerServer) -> None:
    result = fetch_peer(HOST, server.port, OTHER)
    assert result.observation is None
    assert "401" in result.reason and "bad signature" in result.reason
    assert "\n" not in result.reason


class _Impostor(BaseHTTPRequestHandler):
    """Answers any GET with a well-formed envelope signed with `sign_with` (or unsigned)."""

    sign_with: bytes | None = OTHER
    served_at_offset = 0.0

    def do_GET(self) -> None:
        body = json.dumps(
            {"format": 1, "served_at": time.time() + self.served_at_offset, "observation": json.loads(SNAPSHOT.to_json())}
        ).encode()
        nonce = self.headers["Authorization"].split("nonce=")[1].split(",")[0]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.sign_with is not None:
            self.send_header(SIG_HEADER, response_signature(self.sign_with, nonce, 200, body))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _impostor(sign_with: bytes | None, offset: float = 0.0) -> ThreadingHTTPServer:
    handler = type("H", (_Impostor,), {"sign_with": sign_with, "served_at_offset": offset})
    srv = ThreadingHTTPServer((HOST, 0), handler)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


@pytest.mark.parametrize(
    ("sign_with", "offset", "expected"),
    [
        (OTHER, 0.0, "bad response signature"),  # server holding a different secret
        (None, 0.0, "bad response signature"),  # unsigned response
        (SECRET, -120.0, "stale response"),  # genuine signature, old data
        (SECRET, 0.0, None),  # control: the impostor is accepted when it holds the secret
    ],
)
def test_response_is_verified(sign_with: bytes | None, offset: float, expected: str | None) -> None:
    srv = _impostor(sign_with, offset)
    try:
        result = fetch_peer(HOST, srv.server_address[1], SECRET)
    finally:
        srv.shutdown()
        srv.server_close()
    if expected is None:
        assert result.observation == SNAPSHOT
    else:
        assert not result.reachable and expected in result.reason


def test_stale_timestamp_refused(server: PeerServer) -> None:
    for ts in (int(time.time()) - 60, int(time.time()) + 60):
        auth, _ = sign_request(SECRET, "GET", OBSERVATION_PATH, ts=ts)
        status, body, _ = _get(server.port, OBSERVATION_PATH, {"Authorization": auth})
        assert status == 401 and b"timestamp" in body


def test_fresh_hand_crafted_request_accepted(server: PeerServer) -> None:
    auth, nonce = sign_request(SECRET, "GET", OBSERVATION_PATH, ts=int(time.time()) - 10)
    status, body, headers = _get(server.port, OBSERVATION_PATH, {"Authorization": auth})
    assert status == 200
    assert headers[SIG_HEADER] == response_signature(SECRET, nonce, 200, body)
    envelope = json.loads(body)
    assert abs(envelope["served_at"] - time.time()) < 5
    assert NodeObservation.model_validate(envelope["observation"]) == SNAPSHOT


def test_replayed_nonce_refused(server: PeerServer) -> None:
    auth, _ = sign_request(SECRET, "GET", OBSERVATION_PATH)
    assert _get(server.port, OBSERVATION_PATH, {"Authorization": auth})[0] == 200
    status, body, _ = _get(server.port, OBSERVATION_PATH, {"Authorization": auth})
    assert status == 401 and b"nonce already used" in body


@pytest.mark.parametrize(
    "auth",
    [None, "Bearer x", "RECONCILER-HMAC ts=1", "RECONCILER-HMAC ts=1,nonce=zz,sig=00", "RECONCILER-HMAC garbage"],
)
def test_malformed_authorization_refused(server: PeerServer, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    assert _get(server.port, OBSERVATION_PATH, headers)[0] == 401


def test_signature_binds_path(server: PeerServer) -> None:
    auth, _ = sign_request(SECRET, "GET", "/v1/other")
    assert _get(server.port, OBSERVATION_PATH, {"Authorization": auth})[0] == 401


# --- routing ------------------------------------------------------------------------


def test_healthz_unauthenticated(server: PeerServer) -> None:
    status, body, _ = _get(server.port, "/healthz")
    assert (status, body) == (200, b"ok\n")


@pytest.mark.parametrize("path", ["/", "/v1", "/v1/observation/", "/v1/observation?x=1", "/etc/passwd"])
def test_unknown_path_404(server: PeerServer, path: str) -> None:
    assert _get(server.port, path)[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "FOO"])
def test_other_methods_405(server: PeerServer, method: str) -> None:
    status, _, headers = _get(server.port, OBSERVATION_PATH, method=method)
    assert status == 405 and headers["Allow"] == "GET"


# --- lifecycle and timeouts -----------------------------------------------------------


def test_stop_releases_port_promptly() -> None:
    port = _free_port()
    for _ in range(10):
        srv = PeerServer(HOST, port, SECRET, lambda: SNAPSHOT)
        srv.start()
        try:
            assert fetch_peer(HOST, port, SECRET).reachable
        finally:
            t0 = time.monotonic()
            srv.stop()
            assert time.monotonic() - t0 < 1.0
    srv.stop()  # idempotent
    assert "refused" in fetch_peer(HOST, port, SECRET).reason


def test_no_server_unreachable_quickly() -> None:
    t0 = time.monotonic()
    result = fetch_peer(HOST, _free_port(), SECRET, timeout=1.0)
    assert time.monotonic() - t0 < 0.5
    assert not result.reachable and "connection refused" in result.reason


def test_silent_server_times_out() -> None:
    with socket.socket() as listener:  # accepts in the kernel, never answers
        listener.bind((HOST, 0))
        listener.listen(4)
        t0 = time.monotonic()
        result = fetch_peer(HOST, listener.getsockname()[1], SECRET, timeout=0.3)
        elapsed = time.monotonic() - t0
    assert not result.reachable and "timed out" in result.reason
    assert 0.25 < elapsed < 0.8


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = PeerServer("::1", 0, SECRET, lambda: SNAPSHOT)
        srv.start()
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        assert fetch_peer("::1", srv.port, SECRET).observation == SNAPSHOT
    finally:
        srv.stop()


# --- the secret never leaks -----------------------------------------------------------


def test_secret_never_in_responses_or_logs(
    server: PeerServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    auth, _ = sign_request(SECRET, "GET", OBSERVATION_PATH)
    stale, _ = sign_request(SECRET, "GET", OBSERVATION_PATH, ts=1)
    bad, _ = sign_request(OTHER, "GET", OBSERVATION_PATH)
    bodies = [
        _get(server.port, OBSERVATION_PATH, {"Authorization": a}) for a in (auth, auth, stale, bad, f"Bearer {SECRET.decode()}")
    ]
    bodies += [_get(server.port, p) for p in ("/healthz", "/nope", OBSERVATION_PATH)]
    bodies.append(_get(server.port, OBSERVATION_PATH, method="POST"))
    results = [fetch_peer(HOST, server.port, s) for s in (SECRET, OTHER)]
    out, err = capfd.readouterr()
    leaks = [SECRET, SECRET.hex().encode(), auth.encode(), bad.encode()]
    texts = [b"".join([b, json.dumps(h).encode()]) for _, b, h in bodies]
    texts += [caplog.text.encode(), out.encode(), err.encode(), repr(results).encode()]
    for text in texts:
        for leak in leaks:
            assert leak not in text
    assert err == ""  # quiet: no per-request stderr lines


# --- secret file ----------------------------------------------------------------------


def _secret_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "peer.secret"
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_load_secret_strips_whitespace(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, b"  " + SECRET + b"\n")
    assert load_secret(path, owner_uid=os.geteuid()) == SECRET


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_load_secret_refuses_group_other_access(tmp_path: Path, mode: int) -> None:
    path = _secret_file(tmp_path, SECRET, mode)
    with pytest.raises(SecretError, match=f"mode {mode:04o}.*chmod 600") as exc:
        load_secret(path, owner_uid=os.geteuid())
    assert "\n" not in str(exc.value) and SECRET.decode() not in str(exc.value)


def test_load_secret_refuses_short(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, b"short secret   \n")
    with pytest.raises(SecretError, match="12 bytes.*at least 16") as exc:
        load_secret(path, owner_uid=os.geteuid())
    assert "short secret" not in str(exc.value)


def test_load_secret_refuses_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="cannot open"):
        load_secret(tmp_path / "absent")
    with pytest.raises(SecretError, match="not a regular file"):
        load_secret(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(SecretError, match="not a regular file"):
        load_secret(fifo, owner_uid=os.geteuid())  # must not block at open()


def test_load_secret_requires_root_owner(tmp_path: Path) -> None:
    path = _secret_file(tmp_path, SECRET)
    if os.geteuid() != 0:
        with pytest.raises(SecretError, match="must be owned by root"):
            load_secret(path)
        return
    assert load_secret(path) == SECRET
    os.chown(path, 65534, 65534)
    with pytest.raises(SecretError, match="owned by uid 65534, must be owned by root"):
        load_secret(path)

