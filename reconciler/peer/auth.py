"""Shared-secret authentication of the peer channel, in both directions.

Requests carry `Authorization: RECONCILER-HMAC ts=..,nonce=..,sig=..` (HMAC-SHA256 over
method, path, timestamp, nonce and the body's SHA-256); responses carry `X-Reconciler-Sig`,
an HMAC over the request's nonce, the status and the body's SHA-256.  Nothing here ever
puts the secret, or anything derived from it but a signature, into a message or a log.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
import time

from reconciler import safefile, trust

SCHEME = "RECONCILER-HMAC"
SIG_HEADER = "X-Reconciler-Sig"
MAX_SKEW_S = 30.0  # accepted clock difference, and how long a nonce is remembered
MIN_SECRET_BYTES = 16
MAX_SECRET_BYTES = 4096
MAX_NONCES = 4096  # bounded replay memory; full means refuse, never forget early

_NONCE_RE = re.compile(r"^[0-9a-f]{16,64}$")
_SIG_RE = re.compile(r"^[0-9a-f]{64}$")
_TS_RE = re.compile(r"^[0-9]{1,12}$")


class SecretError(ValueError):
    """The peer secret file is unusable; the message is one line and names the file."""


class AuthError(Exception):
    """A request failed authentication; the message is a short reason safe to return."""


def load_secret(path: str | os.PathLike[str], *, owner_uid: int = 0) -> bytes:
    """Read the shared secret: a regular file owned by `owner_uid` (root), mode 0600 or stricter,
    in directories only root can write to (`reconciler.trust`)."""
    try:
        trust.check_dirs(path, "peer secret")
    except trust.UntrustedError as e:
        raise SecretError(str(e)) from None
    try:
        data, st = safefile.read_small(path, "peer secret", MAX_SECRET_BYTES)
    except safefile.SmallFileError as e:
        raise SecretError(str(e)) from None
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise SecretError(f"{path}: mode {mode:04o} gives group/others access to the peer secret; chmod 600 it")
    if st.st_uid != owner_uid:
        who = "root" if owner_uid == 0 else f"uid {owner_uid}"
        raise SecretError(f"{path}: the peer secret is owned by uid {st.st_uid}, must be owned by {who}")
    secret = data.strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(
            f"{path}: the peer secret is {len(secret)} bytes after stripping whitespace, "
            f"at least {MIN_SECRET_BYTES} are required"
        )
    return secret


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _mac(secret: bytes, message: str) -> str:
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def request_signature(secret: bytes, method: str, path: str, ts: str, nonce: str, body: bytes) -> str:
    return _mac(secret, f"{method}\n{path}\n{ts}\n{nonce}\n{body_digest(body)}")


def response_signature(secret: bytes, nonce: str, status: int, body: bytes) -> str:
    # The "response" prefix keeps a response signature from ever verifying as a request's.
    return _mac(secret, f"response\n{nonce}\n{status}\n{body_digest(body)}")


def sign_request(
    secret: bytes,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    ts: int | None = None,
    nonce: str | None = None,
) -> tuple[str, str]:
    """Return (Authorization header value, nonce) for one request."""
    ts_s = str(int(time.time()) if ts is None else ts)
    nonce = secrets.token_hex(16) if nonce is None else nonce
    sig = request_signature(secret, method, path, ts_s, nonce, body)
    return f"{SCHEME} ts={ts_s},nonce={nonce},sig={sig}", nonce


def verify_response(secret: bytes, nonce: str, status: int, body: bytes, sig: str | None) -> bool:
    if sig is None or not _SIG_RE.match(sig):
        return False
    return hmac.compare_digest(response_signature(secret, nonce, status, body), sig)


def parse_authorization(value: str | None) -> tuple[str, str, str]:
    """Split the header into (ts, nonce, sig), or raise AuthError."""
    if not value:
        raise AuthError("missing Authorization")
    scheme, _, params = value.strip().partition(" ")
    if scheme != SCHEME:
        raise AuthError("unsupported Authorization scheme")
    fields: dict[str, str] = {}
    for part in params.split(","):
        key, eq, val = part.strip().partition("=")
        if not eq or key in fields:
            raise AuthError("malformed Authorization")
        fields[key] = val
    if set(fields) != {"ts", "nonce", "sig"}:
        raise AuthError("malformed Authorization")
    ts, nonce, sig = fields["ts"], fields["nonce"], fields["sig"]
    if not (_TS_RE.match(ts) and _NONCE_RE.match(nonce) and _SIG_RE.match(sig)):
        raise AuthError("malformed Authorization")
    return ts, nonce, sig


class NonceCache:
    """Nonces seen within the acceptance window; thread-safe, at most `limit` entries."""

    def __init__(self, limit: int = MAX_NONCES) -> None:
        self._limit = limit
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def add(self, nonce: str, expires: float, now: float) -> None:
        """Remember `nonce` until `expires`; raise AuthError if seen before or if full."""
        with self._lock:
            old = self._expiry.get(nonce)
            if old is not None and old > now:
                raise AuthError("nonce already used")
            if len(self._expiry) >= self._limit:
                self._expiry = {n: e for n, e in self._expiry.items() if e > now}
            if len(self._expiry) >= self._limit:
                raise AuthError("too many recent requests")
            self._expiry[nonce] = expires


def verify_request(
    secret: bytes,
    method: str,
    path: str,
    authorization: str | None,
    body: bytes,
    nonces: NonceCache,
    now: float | None = None,
) -> str:
    """Check one request's signature, freshness and nonce; return the nonce or raise AuthError."""
    now = time.time() if now is None else now
    ts, nonce, sig = parse_authorization(authorization)
    skew = int(ts) - now
    if abs(skew) > MAX_SKEW_S:
        raise AuthError(f"timestamp {skew:+.0f} s from the server clock (limit {MAX_SKEW_S:.0f} s)")
    if not hmac.compare_digest(request_signature(secret, method, path, ts, nonce, body), sig):
        raise AuthError("bad signature")
    # Only signed requests reach the cache, so only a secret holder can fill it.
    nonces.add(nonce, int(ts) + MAX_SKEW_S + 1.0, now)
    return nonce
