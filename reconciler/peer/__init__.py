"""The peer channel: each agent serves its latest snapshot to the other, read-only.

`PeerServer` serves; `fetch_peer` reads and verifies, returning a `PeerResult`;
`load_secret` reads the shared secret.  Both directions are HMAC-SHA256 authenticated
(see `reconciler.peer.auth`).
"""

from reconciler.peer.auth import SecretError, load_secret
from reconciler.peer.client import PeerResult, fetch_peer
from reconciler.peer.server import PeerServer

__all__ = ["PeerResult", "PeerServer", "SecretError", "fetch_peer", "load_secret"]
