"""`reconciler run`: the agent.  Reconcile until converged, then rest until the spec file
changes (watchfiles) or the drift check is due; poll briefly while a guard waits on the
peer; back off exponentially (per action, capped) after a failure.  Serves its latest
snapshot to the peer.  SIGTERM stops it between actions, never in the middle of one.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from reconciler.agent import logs
from reconciler.agent.cycle import Outcome, cycle
from reconciler.agent.peering import PeerLink
from reconciler.model import NodeObservation
from reconciler.observe.node import observe_node
from reconciler.spec import LoadedSpec
from reconciler.spec.load import SpecError, load_spec

log = logging.getLogger("reconciler")

WAIT_POLL_S = 0.05  # how often a waiting guard re-reads the peer
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.5, 30.0
SNAPSHOT_MAX_AGE_S = 0.5  # the peer gets a fresh observation if ours is older


class Agent:
    def __init__(self, path: str, node: str, serve: bool = True) -> None:
        self.path, self.node, self.serve = path, node, serve
        self.spec: LoadedSpec = load_spec(path)
        if node not in self.spec.spec.nodes:
            raise SpecError(path, 1, 1, "nodes", f"this node {node!r} is not in nodes")
        self.peer = PeerLink(self.spec, node)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.failures: dict[tuple[str, str], int] = {}
        self._snap: tuple[float, NodeObservation] | None = None
        self._snap_lock = threading.Lock()
        self._server = None
        self._mtime = self._stat()

    # ---- the peer channel --------------------------------------------------------------
    def snapshot(self) -> NodeObservation | None:
        with self._snap_lock:
            if self._snap is None or time.monotonic() - self._snap[0] > SNAPSHOT_MAX_AGE_S:
                self._snap = (time.monotonic(), self._observe(self.spec, self.node))
            return self._snap[1]

    def _observe(self, spec: LoadedSpec, node: str) -> NodeObservation:
        obs = observe_node(spec, node, spec_digest=spec.digest)
        self._snap = (time.monotonic(), obs)
        return obs

    def _start_server(self) -> None:
        from reconciler.peer import PeerServer, load_secret

        s = self.spec.spec
        try:
            secret = load_secret(s.agent.peer_secret_file)
        except Exception as e:
            log.error(f"{self.node}: not serving the peer channel: {e}")
            return
        self._server = PeerServer(s.nodes[self.node].address, s.agent.peer_port, secret, self.snapshot)
        self._server.start()

    # ---- the spec file --------------------------------------------------------------------
    def _stat(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self.path)
            return (st.st_mtime, st.st_size)
        except OSError:
            return None

    def _reload(self) -> None:
        m = self._stat()
        if m == self._mtime:
            return
        self._mtime = m
        try:
            new = load_spec(self.path)
        except SpecError as e:
            log.error(f"{self.node}: spec edit refused, keeping the last good one: {e}")
            return
        if new.digest != self.spec.digest:
            log.info(f"{self.node}: spec changed ({new.digest[:12]}): primary is {new.spec.primary}")
            self.spec = new
            self.peer.update(new, self.node)

    def _watch(self) -> None:
        import watchfiles

        target = os.path.abspath(self.path)
        for changes in watchfiles.watch(os.path.dirname(target), stop_event=self.stopping,
                                        debounce=0, step=5, rust_timeout=500, yield_on_timeout=True):
            if any(os.path.abspath(p) == target for _, p in changes):
                self.wake.set()

    # ---- the loop ---------------------------------------------------------------------------
    def _delay(self, o: Outcome) -> float:
        if o.status == "acted":
            self.failures.pop((o.action.kind.value, o.action.target), None)
            return 0.0
        if o.status == "failed":
            key = (o.action.kind.value, o.action.target)
            n = self.failures[key] = self.failures.get(key, 0) + 1
            return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (n - 1))
        if o.status == "waiting":
            return WAIT_POLL_S
        return self.spec.spec.agent.drift_check_interval_s

    def step(self) -> Outcome:
        self._reload()
        o = cycle(self.spec, self.node, self._observe, self.peer.fetch)
        if o.status in ("acted", "failed"):
            logs.action_line(self.node, o)
        elif o.status == "waiting" and (o.action, o.plan.notes) != getattr(self, "_last_wait", None):
            logs.waiting_line(self.node, o)
            self._last_wait = (o.action, o.plan.notes)
        return o

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: (self.stopping.set(), self.wake.set()))
        signal.signal(signal.SIGINT, lambda *_: (self.stopping.set(), self.wake.set()))
        if self.serve:
            self._start_server()
        threading.Thread(target=self._watch, name="watch", daemon=True).start()
        log.info(f"{self.node}: agent started for cluster {self.spec.spec.cluster} (primary: {self.spec.spec.primary})")
        try:
            while not self.stopping.is_set():
                o = self.step()
                if o.status == "converged" and getattr(self, "_last_status", None) != "converged":
                    log.info(f"{self.node}: converged")
                self._last_status = o.status
                self.wake.wait(self._delay(o))
                self.wake.clear()
        finally:
            if self._server is not None:
                self._server.stop()
        log.info(f"{self.node}: stopped")
        return 0
