"""A small etcd v3 client over etcd's JSON gateway (HTTP/1.1; what Patroni does), standard library only.

Why not a library: the gRPC `etcd3` package is abandoned and breaks with protobuf >= 4, and the
gateway needs nothing but HTTP and JSON.  etcd 3.4 serves the gateway under `/v3/` on the client
URL.  Keys and values travel base64-encoded; int64 fields come back as JSON strings; proto3 drops
false and zero fields (a txn that lost has no `succeeded`; a keepalive for an expired lease has
no `TTL`).

Every read is linearizable (etcd's default; `serializable` is never sent): a decision is never
taken on a stale member's answer.  Any transport error, timeout or error reply raises EtcdError,
which means "unknown", never "absent": a caller that cannot reach a quorum learns nothing.

Each request goes to one endpoint at a time, starting with the one that answered last, and moves
to the next on a transport error while the request's deadline (monotonic clock) allows.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_RESPONSE_BYTES = 4 << 20


class EtcdError(Exception):
    """The outcome is unknown: no endpoint answered in time, or etcd replied with an error."""


class EtcdAuthError(EtcdError):
    """etcd refused the credentials (a configuration error, not a transient one)."""


class _NotSent(Exception):
    """The connection was never made: the request did not reach etcd (safe to send elsewhere)."""


# Requests that change nothing when repeated: sent to the next member after any failure.  The
# others (put, txn, delete, grant, revoke) go to the next member only when the previous one was
# never reached: a reply lost after etcd applied it must stay "unknown", not be applied twice.
_IDEMPOTENT = frozenset({"/v3/kv/range", "/v3/lease/keepalive", "/v3/lease/timetolive", "/v3/auth/authenticate",
                         "/v3/maintenance/status"})


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text or "")


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix` (etcd's convention: the prefix
    with its last byte below 0xff incremented and what follows dropped; b"\\0" means "to the end")."""
    raw = bytearray(prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KeyValue:
        return cls(key=_unb64(kv.get("key")).decode(errors="replace"),
                   value=_unb64(kv.get("value")).decode(errors="replace"),
                   create_revision=int(kv.get("create_revision", 0)), mod_revision=int(kv.get("mod_revision", 0)),
                   version=int(kv.get("version", 0)), lease=int(kv.get("lease", 0)))


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int  # the cluster's revision after the txn (header)
    ranges: tuple[tuple[KeyValue, ...], ...] = field(default=())  # one per range op, in order


# -- txn building blocks (gateway JSON) -----------------------------------------------------------

def cmp_create_revision(key: str, revision: int, result: str = "EQUAL") -> dict[str, Any]:
    """`create_revision(key) <result> revision`; create_revision 0 means "the key does not exist"."""
    return {"key": _b64(key), "target": "CREATE", "result": result, "create_revision": str(revision)}


def cmp_value(key: str, value: str, result: str = "EQUAL") -> dict[str, Any]:
    return {"key": _b64(key), "target": "VALUE", "result": result, "value": _b64(value)}


def cmp_mod_revision(key: str, revision: int, result: str = "EQUAL") -> dict[str, Any]:
    """`mod_revision(key) <result> revision`; 0 for a key that does not exist."""
    return {"key": _b64(key), "target": "MOD", "result": result, "mod_revision": str(revision)}


def cmp_lease(key: str, lease: int, result: str = "EQUAL") -> dict[str, Any]:
    return {"key": _b64(key), "target": "LEASE", "result": result, "lease": str(lease)}


def op_put(key: str, value: str, lease: int = 0) -> dict[str, Any]:
    req: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        req["lease"] = str(lease)
    return {"request_put": req}


def op_range(key: str) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key)}}


def op_delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


# -- the client ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str  # never logged, never in an exception message


class EtcdClient:
    """One etcd cluster, reached through any of `endpoints` (http:// or https:// URLs)."""

    def __init__(self, endpoints: Sequence[str], timeout: float = 2.0, *, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None,
                 credentials: Credentials | None = None) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self._endpoints = [urllib.parse.urlsplit(e) for e in endpoints]
        for u in self._endpoints:
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError(f"etcd endpoint {u.geturl()!r}: expected http://HOST:PORT or https://HOST:PORT")
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        if any(u.scheme == "https" for u in self._endpoints):
            self._ssl = ssl.create_default_context(cafile=ca_file)
            if cert_file:
                self._ssl.load_cert_chain(cert_file, key_file)
        self._credentials = credentials
        self._token: str | None = None
        self._preferred = 0

    # -- transport ---------------------------------------------------------------------------

    def _post_once(self, u: urllib.parse.SplitResult, path: str, body: bytes, connect_by: float,
                   deadline: float) -> tuple[int, bytes]:
        """One request to one member: connected by `connect_by`, answered by `deadline`."""
        remaining = connect_by - time.monotonic()
        if remaining <= 0:
            raise _NotSent("no time left to connect")
        port = u.port or (443 if u.scheme == "https" else 80)
        conn: http.client.HTTPConnection
        if u.scheme == "https":
            conn = http.client.HTTPSConnection(u.hostname or "", port, timeout=remaining, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(u.hostname or "", port, timeout=remaining)
        headers = {"Content-Type": "application/json", "Connection": "close"}
        if self._token and path != "/v3/auth/authenticate":
            headers["Authorization"] = self._token
        try:
            try:
                conn.connect()
            except (OSError, TimeoutError) as e:
                raise _NotSent(f"{type(e).__name__}: {e}") from None
            if conn.sock is not None:
                conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            chunks, size = [], 0
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("deadline passed")
                if conn.sock is not None:
                    conn.sock.settimeout(left)
                chunk = resp.read(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise EtcdError(f"etcd at {u.netloc}: response larger than {MAX_RESPONSE_BYTES} bytes")
                chunks.append(chunk)
            return resp.status, b"".join(chunks)
        finally:
            conn.close()

    def _post(self, path: str, req: dict[str, Any], timeout: float | None = None, reauth: bool = True) -> dict[str, Any]:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        body = json.dumps(req).encode()
        errors: list[str] = []
        n = len(self._endpoints)
        for i in range(n):
            idx = (self._preferred + i) % n
            u = self._endpoints[idx]
            now = time.monotonic()
            if now >= deadline:
                break
            # Each member left gets an equal share of the time left to connect (a blackholed one
            # must not use it all); a request that cannot be resent keeps the rest to be answered.
            share = now + (deadline - now) / (n - i)
            try:
                status, data = self._post_once(u, path, body, share, share if path in _IDEMPOTENT else deadline)
            except _NotSent as e:
                errors.append(f"{u.netloc}: {e}")
                continue
            except (OSError, http.client.HTTPException, TimeoutError) as e:
                errors.append(f"{u.netloc}: {type(e).__name__}: {e}")
                self._avoid(idx)
                if path in _IDEMPOTENT:
                    continue
                raise EtcdError(f"{path} sent to etcd but no reply (it may or may not have been applied): "
                                + "; ".join(errors)) from None
            reply = self._decode(u, status, data)
            if status == 200:
                self._preferred = idx
                return reply
            message = str(reply.get("error") or reply.get("message") or f"HTTP {status}")
            if "auth" in message and "token" in message and self._credentials and path != "/v3/auth/authenticate":
                # an expired or revoked token: etcd checked it before applying anything, so the
                # request may be sent again, once, with a fresh token
                if not reauth:
                    raise EtcdAuthError(f"etcd at {u.netloc} refused a fresh token for {path}: {message}")
                self._authenticate(deadline)
                return self._post(path, req, max(0.1, deadline - time.monotonic()), reauth=False)
            if "no leader" in message or (path in _IDEMPOTENT and (status in (502, 503, 504) or "leader" in message
                                                                  or "timed out" in message)):
                # this member has no quorum now (a member without a leader applies nothing): try another
                errors.append(f"{u.netloc}: {message}")
                self._avoid(idx)
                continue
            raise EtcdError(f"etcd at {u.netloc} refused {path}: {message}")
        raise EtcdError("no etcd endpoint answered in time: " + "; ".join(errors or ["deadline passed"]))

    def _avoid(self, idx: int) -> None:
        """A member that failed is not asked first next time (one cut off from the raft leader
        by a partial partition answers nothing until the cut heals)."""
        if idx == self._preferred:
            self._preferred = (idx + 1) % len(self._endpoints)

    @staticmethod
    def _decode(u: urllib.parse.SplitResult, status: int, data: bytes) -> dict[str, Any]:
        try:
            reply = json.loads(data or b"{}")
        except ValueError:
            raise EtcdError(f"etcd at {u.netloc}: HTTP {status} with a body that is not JSON") from None
        if not isinstance(reply, dict):
            raise EtcdError(f"etcd at {u.netloc}: HTTP {status} with an unexpected JSON body")
        return reply

    def _authenticate(self, deadline: float) -> None:
        assert self._credentials is not None
        self._token = None
        try:
            reply = self._post("/v3/auth/authenticate", {"name": self._credentials.username,
                                                         "password": self._credentials.password},
                               max(0.1, deadline - time.monotonic()))
        except EtcdError as e:
            if "refused" in str(e):
                raise EtcdAuthError(f"etcd refused the credentials of user {self._credentials.username!r}") from None
            raise
        self._token = str(reply.get("token") or "") or None

    def _call(self, path: str, req: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        if self._credentials and self._token is None:
            self._authenticate(time.monotonic() + (self.timeout if timeout is None else timeout))
        return self._post(path, req, timeout)

    # -- kv ----------------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        """The key's current value (linearizable), or None when it does not exist."""
        kvs = self._call("/v3/kv/range", {"key": _b64(key)}).get("kvs") or []
        return KeyValue.from_json(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> list[KeyValue]:
        reply = self._call("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix.encode()))})
        return [KeyValue.from_json(kv) for kv in reply.get("kvs") or []]

    def put(self, key: str, value: str, lease: int = 0) -> int:
        """Returns the cluster's revision after the put."""
        req: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            req["lease"] = str(lease)
        return int(self._call("/v3/kv/put", req).get("header", {}).get("revision", 0))

    def delete(self, key: str) -> int:
        """Returns how many keys were deleted (0 or 1)."""
        return int(self._call("/v3/kv/deleterange", {"key": _b64(key)}).get("deleted", 0))

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] | None = None) -> TxnResult:
        reply = self._call("/v3/kv/txn", {"compare": compare, "success": success, "failure": failure or []})
        ranges = tuple(tuple(KeyValue.from_json(kv) for kv in r["response_range"].get("kvs") or [])
                       for r in reply.get("responses") or [] if "response_range" in r)
        return TxnResult(succeeded=bool(reply.get("succeeded", False)),
                         revision=int(reply.get("header", {}).get("revision", 0)), ranges=ranges)

    # -- leases --------------------------------------------------------------------------------

    def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted TTL in seconds)."""
        reply = self._call("/v3/lease/grant", {"TTL": str(ttl)})
        if reply.get("error"):
            raise EtcdError(f"etcd did not grant a lease: {reply['error']}")
        return int(reply["ID"]), int(reply.get("TTL", 0))

    def keepalive(self, lease: int, timeout: float | None = None) -> int | None:
        """Renew `lease`: the TTL etcd restarted it with, or None when the lease no longer exists
        (expired or revoked: the reply then carries no TTL)."""
        reply = self._call("/v3/lease/keepalive", {"ID": str(lease)}, timeout)
        ttl = int((reply.get("result") or {}).get("TTL", 0))
        return ttl if ttl > 0 else None

    def revoke(self, lease: int) -> None:
        """Revoke `lease`, deleting every key bound to it; a lease already gone is not an error."""
        try:
            self._call("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError as e:
            if "lease not found" not in str(e):
                raise

    def time_to_live(self, lease: int) -> int | None:
        """Seconds left on `lease` as the server counts them, or None when it does not exist."""
        reply = self._call("/v3/lease/timetolive", {"ID": str(lease)})
        ttl = int(reply.get("TTL", 0))  # proto3 drops 0 (under a second left); a lease that is gone says -1
        return ttl if ttl >= 0 else None

    # -- cluster -------------------------------------------------------------------------------

    def status(self, endpoint: int = 0) -> dict[str, Any]:
        """One member's status (its id, the raft leader it knows, raft term), not failing over."""
        u = self._endpoints[endpoint]
        deadline = time.monotonic() + self.timeout
        try:
            status, data = self._post_once(u, "/v3/maintenance/status", b"{}", deadline, deadline)
        except (_NotSent, OSError, http.client.HTTPException, TimeoutError) as e:
            raise EtcdError(f"etcd at {u.netloc}: status: {e}") from None
        reply = self._decode(u, status, data)
        if status != 200:
            raise EtcdError(f"etcd at {u.netloc}: status: {reply.get('error') or status}")
        return reply
