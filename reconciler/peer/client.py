"""Fetch the peer agent's snapshot: a verified `NodeObservation`, or "unreachable".

`fetch_peer` never raises and never guesses: any failure (refused, timeout, 401, bad
response signature, stale or invalid data) is a `PeerResult` with a one-line reason, and
the caller must treat it as "peer state unknown", not as "peer is Secondary".
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass

from pydantic import ValidationError

from reconciler.model import NodeObservation
from reconciler.peer.auth import MAX_SKEW_S, SIG_HEADER, sign_request, verify_response
from reconciler.peer.server import ENVELOPE_FORMAT, OBSERVATION_PATH

MAX_RESPONSE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class PeerResult:
    """Exactly one of `observation` (peer reached and verified) or `reason` (unreachable)."""

    observation: NodeObservation | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if (self.observation is None) == (self.reason is None):
            raise ValueError("PeerResult needs exactly one of observation or reason")

    @property
    def reachable(self) -> bool:
        return self.observation is not None

    @classmethod
    def unreachable(cls, reason: str) -> PeerResult:
        return cls(reason=_one_line(reason) or "unknown error")


class _Unreachable(Exception):
    pass


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def fetch_peer(
    host: str, port: int, secret: bytes, timeout: float = 1.0, *, expect_node: str | None = None
) -> PeerResult:
    """GET the peer's snapshot within `timeout` seconds overall; never raises."""
    try:
        status, body, sig, nonce = _request(host, port, secret, timeout)
        if status != 200:
            raise _Unreachable(f"HTTP {status}: {_error_reason(body)}")
        if not verify_response(secret, nonce, status, body, sig):
            raise _Unreachable("bad response signature (different secret, or not our peer)")
        observation = _parse_envelope(body)
        if expect_node is not None and observation.node != expect_node:
            raise _Unreachable(f"peer reports node {observation.node!r}, expected {expect_node!r}")
        return PeerResult(observation=observation)
    except _Unreachable as e:
        return PeerResult.unreachable(f"{host} port {port}: {e}")
    except ConnectionRefusedError:
        return PeerResult.unreachable(f"{host} port {port}: connection refused")
    except TimeoutError:
        return PeerResult.unreachable(f"{host} port {port}: timed out after {timeout:g} s")
    except OSError as e:
        return PeerResult.unreachable(f"{host} port {port}: {e.strerror or e}")
    except http.client.HTTPException as e:
        return PeerResult.unreachable(f"{host} port {port}: bad HTTP response ({type(e).__name__})")
    except Exception as e:  # noqa: BLE001 - contract: never an exception to the caller
        return PeerResult.unreachable(f"{host} port {port}: unexpected error: {type(e).__name__}: {e}")


def _request(host: str, port: int, secret: bytes, timeout: float) -> tuple[int, bytes, str | None, str]:
    """One signed GET; returns (status, body, response signature header, request nonce)."""
    deadline = time.monotonic() + timeout
    auth, nonce = sign_request(secret, "GET", OBSERVATION_PATH)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", OBSERVATION_PATH, headers={"Authorization": auth, "Connection": "close"})
        _set_remaining(conn, deadline)
        resp = conn.getresponse()
        chunks: list[bytes] = []
        size = 0
        while True:
            _set_remaining(conn, deadline)
            chunk = resp.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise _Unreachable(f"response larger than {MAX_RESPONSE_BYTES} bytes")
            chunks.append(chunk)
        return resp.status, b"".join(chunks), resp.getheader(SIG_HEADER), nonce
    finally:
        conn.close()


def _set_remaining(conn: http.client.HTTPConnection, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline passed")
    if conn.sock is not None:
        conn.sock.settimeout(remaining)


def _error_reason(body: bytes) -> str:
    try:
        reason = json.loads(body)["error"]
    except Exception:  # noqa: BLE001 - any non-JSON error body
        return "no reason given"
    return _one_line(str(reason), 120)


def _parse_envelope(body: bytes) -> NodeObservation:
    try:
        envelope = json.loads(body)
    except ValueError:
        raise _Unreachable("response is not JSON") from None
    if not isinstance(envelope, dict) or envelope.get("format") != ENVELOPE_FORMAT:
        raise _Unreachable("unknown response envelope format")
    served_at = envelope.get("served_at")
    if not isinstance(served_at, (int, float)) or isinstance(served_at, bool):
        raise _Unreachable("response has no served_at")
    skew = served_at - time.time()
    if abs(skew) > MAX_SKEW_S:
        raise _Unreachable(f"stale response: served_at {skew:+.0f} s from the local clock")
    try:
        return NodeObservation.model_validate(envelope.get("observation"))
    except ValidationError as e:
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": str(e)}
        where = ".".join(str(p) for p in first["loc"]) or "observation"
        raise _Unreachable(f"invalid snapshot: {where}: {first['msg']}") from None
