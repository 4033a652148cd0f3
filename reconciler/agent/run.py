"""`reconciler run`: the agent, stepping the shared loop (`agent.loop`) for as long as it runs.
Reconcile until converged, then rest until the spec changes (a file edit, or a new commit
at the git HEAD: watchfiles plus a cheap poll) or the drift check is due; poll briefly while
a guard waits on the peer; when only an operator can unblock the next action, say so once
and re-check at the drift interval (or on a spec change); back off exponentially (per
action, capped) after a failure or an action whose effect did not show.  Serves its
snapshot (and metrics) to the peer, records its revisions, talks to systemd.  SIGTERM stops
it between actions, never during one.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

from reconciler import trust
from reconciler.agent import logs
from reconciler.agent.coordination import CoordError, Coordinator, is_leadership_step
from reconciler.agent.loop import Acted, Converged, Loop, Observe, OperatorNeeded, Outcome, Retrying, Waiting
from reconciler.agent.metrics import Metrics
from reconciler.agent.peering import PeerLink, serve_deadline
from reconciler.agent.sdnotify import Notifier
from reconciler.agent.source import FileSource, SourceError, SpecSource, stamp
from reconciler.agent.state import DEFAULT_STATE_DIR, RevisionState, revision_label, short
from reconciler.coord.connect import CoordConfigError
from reconciler.coord.etcd import EtcdError
from reconciler.execute import hooks
from reconciler.execute.dispatch import Result, announce_held, run_action
from reconciler.model import NodeObservation
from reconciler.observe.node import observe_node
from reconciler.plan.actions import Action, Kind
from reconciler.plan.leadership import Role, role
from reconciler.plan.render import title
from reconciler.spec import LoadedSpec
from reconciler.spec.load import SpecError

if TYPE_CHECKING:
    from reconciler.peer import PeerServer

log = logging.getLogger("reconciler")

WAIT_POLL_S = 0.05  # how often a waiting guard re-reads the peer (an operator-only one: the drift interval)
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.5, 30.0
SNAPSHOT_MAX_AGE_S = 0.5  # the peer gets a fresh observation if ours is older
ACTION_PING_CAP_S = 3600.0
UNCOMMITTED_CHECK_S = 5.0  # `git status` of the spec file, besides on every edit event  # the watchdog is fed during one action for at most this long


def _raw_observe(spec: LoadedSpec, node: str) -> NodeObservation:
    return observe_node(spec, node)


class Agent:
    def __init__(self, source: SpecSource | str, node: str, serve: bool = True, state_dir: str | None = None,
                 observe: Observe = _raw_observe, notifier: Notifier | None = None) -> None:
        self.source = FileSource(source) if isinstance(source, str) else source
        self.node, self.serve, self._raw = node, serve, observe
        self.current: LoadedSpec = self.source.load()  # a SpecError or SourceError is the caller's
        if node not in self.spec.model.nodes:
            raise SpecError(self.source.describe(), 1, 1, "nodes", f"this node {node!r} is not in nodes")
        self.revs = RevisionState(node, self.source.describe(), state_dir)
        self.coord: Coordinator | None = None  # automatic failover: the lease keeper, the claim, the watchdog
        if self.spec.model.failover.mode == "automatic":
            self.coord = Coordinator(self.spec, node, state_dir or DEFAULT_STATE_DIR)
        self._coord_lock = threading.Lock()
        self.revs.attempt(self.label)
        self.revs.running(self.label)
        self.peer = PeerLink(self.spec, node)
        self.metrics, self.notify = Metrics(), notifier or Notifier()
        self.wake, self.stopping = threading.Event(), threading.Event()
        self.watching = threading.Event()  # set once the watcher runs (tests wait for it)
        self.loop = Loop(node, self._loop_observe, self._fetch_peer, self._execute)
        self.peer_obs: NodeObservation | None = None
        self._snap: tuple[float, NodeObservation] | None = None
        self._snap_lock = threading.Lock()
        self._server: PeerServer | None = None
        self._acting_since: float | None = None
        self._last_wait: object = None
        self._last_outcome: type[Outcome] | None = None
        self._role: str | None = None  # the role this node last converged in
        self._self_fencing = False  # the failover hook ran for this self-demotion
        self._effective = self.spec.model.primary  # the Primary this node last planned for
        self.hook_threads: list[threading.Thread] = []  # running hooks (tests join them)

    @property
    def spec(self) -> LoadedSpec:
        return self.current

    @property
    def label(self) -> str:
        return revision_label(self.current.revision, self.current.digest)

    # ---- observing, and the peer channel -----------------------------------------------
    def snapshot(self) -> NodeObservation | None:
        with self._snap_lock:
            if self._snap is None or time.monotonic() - self._snap[0] > SNAPSHOT_MAX_AGE_S:
                self._observe(self.spec, self.node)
            return self._snap[1] if self._snap else None

    def _observe(self, spec: LoadedSpec, node: str) -> NodeObservation:
        obs = stamp(self._raw(spec, node), spec)
        if self.coord is not None:
            with self._coord_lock:
                obs = obs.model_copy(update={"coord": self.coord.observe()})
        self._snap = (time.monotonic(), obs)
        self.notify.ready(f"observed; reconciling {short(self.label)}")
        return obs

    def _loop_observe(self, spec: LoadedSpec, node: str) -> NodeObservation:
        """The loop's own observation: also the heartbeat the lease keeper renews on, written only
        when PostgreSQL answered (or is not running): a hung loop or a hung PostgreSQL stops it,
        and the lease then runs out.  The peer channel's observations never count."""
        obs = self._observe(spec, node)
        if self.coord is not None and "postgres" not in obs.failed_parts():
            self.coord.heartbeat()
        return obs

    def _fetch_peer(self) -> NodeObservation | None:
        if self.coord is not None and self.coord.self_fencing:
            self.peer_obs = None  # a self-demotion waits for nobody, and has a budget: no peer timeout per step
            return None
        self.peer_obs = self.peer.fetch()
        return self.peer_obs

    def _execute(self, spec: LoadedSpec, a: Action) -> Result:
        self._acting_since = time.monotonic()
        try:
            if self.coord is not None and is_leadership_step(a):
                return self._leadership_step(spec, a)
            return run_action(spec, a)
        finally:
            self._acting_since = None

    def _leadership_step(self, spec: LoadedSpec, a: Action) -> Result:
        assert self.coord is not None
        if a.blocked:
            return Result(False, "blocked: " + "; ".join(a.waiting_on))
        try:
            with self._coord_lock:
                return Result(True, self.coord.execute(spec, a))
        except (CoordError, EtcdError) as e:
            return Result(False, str(e).splitlines()[0][:300])
        except Exception as e:  # a driver's failure (watchdog ioctl, state file) is reported, never raised
            return Result(False, f"{type(e).__name__}: {e}".splitlines()[0][:300])

    def _start_server(self) -> None:
        from reconciler.peer import PeerServer, load_secret

        s = self.spec.model
        try:
            secret = load_secret(s.agent.peer_secret_file)
        except Exception as e:
            log.error(f"{self.node}: not serving the peer channel: {e}")
            return
        metrics = self.metrics.exposition if s.agent.metrics else None
        server = self._server = PeerServer(s.nodes[self.node].address, s.agent.peer_port, secret, self.snapshot,
                                           metrics, peers=self.peer.addresses, deadline_s=serve_deadline())
        server.start()

    # ---- the spec source --------------------------------------------------------------------
    def _reload(self) -> None:
        if not self.source.changed():
            return
        try:
            new = self.source.load()
            if self.node not in new.model.nodes:
                raise SpecError(new.path, 1, 1, "nodes", f"this node {self.node!r} is not in nodes")
            if new.model.failover.mode != self.spec.model.failover.mode:
                raise SpecError(new.path, 1, 1, "failover.mode", "changing the failover mode takes a restart of "
                                "the agent (its lease keeper and watchdog start and stop with it); switch over "
                                "first so that this node holds no leader key")
            if self.coord is not None:
                self.coord.update(new)  # a bad CA or password file refuses the edit here, not in the loop
        except (SpecError, SourceError, trust.UntrustedError, CoordConfigError, OSError, ValueError) as e:
            log.error(f"{self.node}: spec edit refused, keeping the last good one ({short(self.label)}): {e}")
            self.revs.attempt(self.source.attempted, error=str(e))
            return
        self.revs.attempt(revision_label(new.revision, new.digest))
        self.check_uncommitted()
        if new.digest == self.spec.digest and new.revision == self.current.revision:
            return
        rev = f"revision {new.revision[:12]}" if new.revision else f"spec {new.digest[:12]}"
        fenced = f", fenced: {', '.join(new.model.fenced)}" if new.model.fenced else ""
        log.info(f"{self.node}: now reconciling {rev}: primary is {new.model.primary}{fenced}")
        self.current = new
        self.revs.running(self.label)
        self.peer.update(new, self.node)

    def check_uncommitted(self) -> None:
        try:
            dirty = self.source.uncommitted()
        except SourceError:
            return
        if dirty and not self.revs.rev.uncommitted:
            log.warning(f"{self.node}: uncommitted edits to {self.source.path} are ignored: "
                        f"reconciling the committed revision {short(self.label)}")
        self.revs.uncommitted(dirty)

    def _watch(self) -> None:
        try:
            self._watch_events()
        except Exception as e:  # noqa: BLE001 - watching is an optimisation; polling still works
            log.warning(f"{self.node}: watching the spec failed ({type(e).__name__}: {e}); polling instead")
            while not self.stopping.wait(0.5):
                if self.source.changed():
                    self.wake.set()

    def _watch_events(self) -> None:
        import watchfiles

        dirs, recursive = self.source.watch()
        wt = getattr(self.source, "worktree_file", None)
        checked = time.monotonic()
        for changes in watchfiles.watch(*dirs, watch_filter=lambda _c, p: self.source.relevant(p),
                                        stop_event=self.stopping, debounce=0, step=5, rust_timeout=500,
                                        yield_on_timeout=True, recursive=recursive, ignore_permission_denied=True):
            self.watching.set()
            if changes:
                self.source.notify()
            if self.source.changed():
                self.wake.set()
            edited = wt is not None and any(os.path.abspath(p) == wt for _, p in changes)
            if edited or time.monotonic() - checked >= UNCOMMITTED_CHECK_S:
                checked = time.monotonic()
                self.check_uncommitted()

    def _feed_watchdog(self) -> None:
        """Keeps systemd's watchdog fed while one (bounded) action runs; the loop feeds it otherwise."""
        while not self.stopping.wait(self.notify.interval or 1.0):
            since = self._acting_since
            if since is not None and time.monotonic() - since < ACTION_PING_CAP_S:
                self.notify.ping(force=True)

    # ---- the loop ---------------------------------------------------------------------------
    def _delay(self, o: Outcome) -> float:
        match o:
            case Acted():
                return 0.0
            case Retrying(attempt=n):
                return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (n - 1)))
            case Waiting():
                return WAIT_POLL_S
        rest = float(self.spec.model.agent.drift_check_interval_s)  # Converged, OperatorNeeded
        return rest

    def _rest(self, o: Outcome) -> float:
        """How long the loop rests after `o`: in automatic mode never longer than a renewal
        interval, so that the lease keeper's heartbeat (written by each observation) stays fresh."""
        d = self._delay(o)
        return min(d, self.spec.model.failover.renew_interval_s) if self.coord is not None else d

    def step(self) -> Outcome:
        self._reload()
        if self.coord is not None:
            self.coord.restart_keeper_if_dead()
        t0 = time.monotonic()
        o = self.loop.step(self.spec)
        r = self._leadership(o)
        self._effective = r.primary
        if isinstance(o, Converged):
            self.revs.applied(self.label)
            self._last_wait = None  # a wait after this one is news again
            self._converged_as("primary" if self._effective == self.node else "secondary")
        self.metrics.record(self.spec, o, self.peer_obs, time.monotonic() - t0,
                            {"applied": self.revs.rev.applied, "attempted": self.revs.rev.attempted,
                             "current": self.current.revision})
        self.notify.status(self.status_line(o))
        if isinstance(o, Acted | Retrying):
            logs.action_line(self.node, o)
        if isinstance(o, Acted) and self.coord is not None:
            self._failover_hook(o, r)
        elif isinstance(o, Waiting | OperatorNeeded) and (o.action, o.plan.notes) != self._last_wait:
            logs.waiting_line(self.node, o, self._delay(o) if isinstance(o, OperatorNeeded) else None)
            self._last_wait = (o.action, o.plan.notes)
            if isinstance(o, OperatorNeeded):
                self._hook("operator_needed", action=title(o.action), reason=o.reason)
        return o

    def _leadership(self, o: Outcome) -> Role:
        """Whom this node plans for as the Primary: the spec's in manual mode, the leader key's
        holder as etcd and this node's claim say in automatic mode ("none" while nobody holds it)."""
        return role(self.spec.model, self.node, o.own, self.spec.digest, self.peer_obs)

    def _failover_hook(self, o: Acted, r: Role) -> None:
        """The failover hook: this node acquired the key at epoch >= 2, or started demoting itself
        because it lost it (once per self-demotion)."""
        c = self.coord.claim if self.coord is not None else None
        if o.action.kind is Kind.COORD_ACQUIRE and c is not None and (c.held_epoch or 0) >= 2:
            self._hook("failover", what="acquired", epoch=str(c.held_epoch), reason=o.action.reason)
        if r.self_fence and not self._self_fencing:
            self._hook("failover", what="self_demotion", reason=r.why)
        self._self_fencing = r.self_fence

    def _converged_as(self, role: str) -> None:
        """The role_change hook: this node converged in another role than the last time (not on
        the agent's first convergence: what it was before it started is not known)."""
        before, self._role = self._role, role
        if before is not None and before != role:
            self._hook("role_change", role=role, previous_role=before)

    def _hook(self, event: str, **facts: str) -> None:
        h = self.spec.model.hooks
        argvs = getattr(h, event)
        if argvs:
            s = self.spec.model
            primary = {"primary": s.primary} if self.coord is None else {"primary": self._effective,
                                                                         "preferred_primary": s.primary}
            t = hooks.fire(event, argvs, {"node": self.node, "cluster": s.cluster, **primary,
                                          "revision": self.label, **facts},
                           h.timeout_s, self.node)
            self.hook_threads = [x for x in self.hook_threads if x.is_alive()] + ([t] if t else [])

    def status_line(self, o: Outcome) -> str:
        dirty = " (uncommitted edits ignored)" if self.revs.rev.uncommitted else ""
        match o:
            case Acted(action=a):
                return f"applied {title(a)}; reconciling {short(self.label)}{dirty}"
            case Waiting(action=a, reason=why):
                return f"waiting on {title(a)}: {why}"
            case OperatorNeeded(action=a, reason=why):
                return f"waiting for the operator on {title(a)}: {why}"
            case Retrying(action=a, reason=why):
                return f"failed {title(a)}: {why}"
        return f"converged at {short(self.label)}{dirty}"

    def run(self) -> int:
        self._signals()
        if self.serve:
            self._start_server()
        threading.Thread(target=self._watch, name="watch", daemon=True).start()
        if self.notify.interval is not None:
            threading.Thread(target=self._feed_watchdog, name="watchdog", daemon=True).start()
        self.check_uncommitted()
        if self.coord is not None:
            self.coord.start()
        self._reannounce()
        log.info(f"{self.node}: agent started for cluster {self.spec.model.cluster} from {self.source.describe()} "
                 f"({short(self.label)}, primary: {self.spec.model.primary})")
        try:
            self._loop()
        finally:
            self.notify.stopping()
            if self.coord is not None:
                self.coord.stop()
            if self._server is not None:
                self._server.stop()
        log.info(f"{self.node}: stopped")
        return 0

    def _reannounce(self) -> None:
        """An agent killed after adding addresses may not have announced them: on start, the
        Primary announces the floating addresses it holds once more (GARPs leave no trace to
        observe, so this is the one thing done on start rather than from the plan)."""
        holder = self.coord.claim.held_lease is not None if self.coord is not None else None
        if holder is False or (holder is None and self.spec.model.primary != self.node):
            return
        try:
            obs = observe_node(self.spec, self.node)
            for name, iface in obs.interfaces.items():
                want = self.spec.address_sets.get(name, frozenset())
                held = tuple(a.address for a in iface.addresses if a.owned and a.address in want)
                if held:
                    announce_held(self.spec, name, held)
        except Exception as e:  # announcing is best effort; the loop goes on
            log.warning(f"{self.node}: re-announcing held addresses failed: {e}")

    def _loop(self) -> None:
        while not self.stopping.is_set():
            o = self.step()
            if isinstance(o, Converged) and self._last_outcome is not Converged:
                log.info(f"{self.node}: converged at {short(self.label)}")
            self._last_outcome = type(o)
            self.notify.ping()
            delay, ping = self._rest(o), self.notify.next_ping_in()
            self.wake.wait(delay if ping is None else min(delay, ping))
            self.wake.clear()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping.set()
        self.wake.set()

    def _signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # tests run the loop in a thread and stop it with `stopping`
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
