"""Reading the peer agent's snapshot for the planner's guards.

Any failure (no secret, refused, timeout, bad signature, stale) is "unreachable": the
planner then waits on every guard that needs the peer, and never assumes it Secondary.

The fetch timeout is 1 s; RECONCILER_PEER_TIMEOUT_S overrides it for machines where one
observation takes longer than that (the peer observes afresh for each request when its
snapshot is older than 0.5 s), e.g. the qemu/TCG lab, where it takes 2-5 s.

Serving: the peer server answers only the peer's address (`PeerLink.addresses`, re-read at
each accept, so a reloaded spec takes effect) and this host, and gives each request one
deadline from accept (`serve_deadline`): 5 s, or the fetch timeout when that is longer (both
nodes are expected to run with the same RECONCILER_PEER_TIMEOUT_S).
"""

from __future__ import annotations

import logging
import os

from reconciler.model import NodeObservation
from reconciler.peer import fetch_peer, load_secret
from reconciler.peer.server import REQUEST_DEADLINE_S
from reconciler.spec import LoadedSpec

log = logging.getLogger("reconciler.peer")

TIMEOUT_ENV = "RECONCILER_PEER_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1.0


def default_timeout() -> float:
    """1 s, or RECONCILER_PEER_TIMEOUT_S when it is a positive number (else ignored)."""
    try:
        value = float(os.environ.get(TIMEOUT_ENV, ""))
    except ValueError:
        return DEFAULT_TIMEOUT_S
    return value if 0 < value <= 300 else DEFAULT_TIMEOUT_S


def serve_deadline() -> float:
    """The peer server's whole-request deadline: no shorter than the peer's fetch timeout."""
    return max(REQUEST_DEADLINE_S, default_timeout())


class PeerLink:
    def __init__(self, spec: LoadedSpec, node: str, timeout: float | None = None) -> None:
        self.timeout = default_timeout() if timeout is None else timeout
        self.last_reason: str | None = None
        self.update(spec, node)

    def update(self, spec: LoadedSpec, node: str) -> None:
        s = spec.model
        self.peer = s.peer_of(node)
        self.host = s.nodes[self.peer].address if self.peer else None
        self.port = s.agent.peer_port
        self._secret_file = s.agent.peer_secret_file
        self.secret: bytes | None = None

    def addresses(self) -> list[str]:
        """The addresses the peer server answers besides this host's: the peer's, if any."""
        host = self.host
        return [host] if host else []

    def fetch(self) -> NodeObservation | None:
        if self.peer is None or self.host is None:
            return None
        if self.secret is None:
            try:
                self.secret = load_secret(self._secret_file)
            except Exception as e:
                self._note(f"peer secret: {e}")
                return None
        r = fetch_peer(self.host, self.port, self.secret, self.timeout, expect_node=self.peer)
        self._note(r.reason)
        return r.observation

    def _note(self, reason: str | None) -> None:
        if reason != self.last_reason and reason is not None:
            log.warning("peer %s unreachable: %s", self.peer, reason)
        self.last_reason = reason


def fetch_peer_observation(spec: LoadedSpec, node: str) -> NodeObservation | None:
    return PeerLink(spec, node).fetch()
