"""The agent's side of automatic failover: its lease keeper, its memory, its etcd steps, its watchdog.

- **The lease keeper** (`coord/lease.py`) runs as a child process: a long action in the agent's
  loop does not stop the renewals, and a hung loop stops them (the keeper renews only while the
  loop's heartbeat, written each time the loop observes this node, is fresh).  A restarted agent
  hands the lease its claim names to the new keeper (`--adopt`), so a restart does not cost the
  holder its key.  The keeper ends with the agent and never revokes.
- **The claim** (`coord/claim.py`): the highest epoch seen and the epoch, lease and revision this
  node acquired, in `claim.json` of the agent's private state directory, written before the
  step that needs it is reported done.
- **The observation** (`observe/coord.py`): one linearizable etcd read, the keeper's state file
  and the claim, after the same bookkeeping the simulated cluster runs.
- **The etcd steps** (`coord/election.py`) run under the keeper's lease; an acquisition succeeds
  only if etcd still shows what the plan decided on (its payload).
- **The watchdog** (`coord/watchdog.py`) is held open by this process and fed by a thread only
  when the keeper's state shows a keepalive answered since the last feed: no renewal, no feed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import asdict

from reconciler import safefile
from reconciler.agent.etcd_access import client_for, keeper_args
from reconciler.coord import claim as claims
from reconciler.coord.claim import Claim
from reconciler.coord.connect import CoordConfigError
from reconciler.coord.election import Election
from reconciler.coord.etcd import EtcdError
from reconciler.coord.lease import LeaseState, boottime, read_state, write_heartbeat
from reconciler.coord.watchdog import Watchdog, WatchdogError
from reconciler.model import CoordObs
from reconciler.observe.coord import observe
from reconciler.observe.drbd import DrbdObserveError, read_drbd
from reconciler.plan.actions import Action, Kind
from reconciler.plan.kinds import Acquisition
from reconciler.plan.leadership import drbd_in_sync
from reconciler.spec import LoadedSpec

log = logging.getLogger("reconciler")

FEED_POLL_S = 0.1
KEEPER_STOP_S = 5.0
LEASE_WAIT_S = 10.0
ARMED = "watchdog-armed"  # present while this agent holds the watchdog armed (for `plan` and `status`)
KINDS = (Kind.COORD_ACQUIRE, Kind.COORD_RELEASE, Kind.COORD_PUBLISH, Kind.COORD_WITHDRAW, Kind.WATCHDOG_ARM,
         Kind.WATCHDOG_DISARM)


class CoordError(Exception):
    pass


def drbd_gap(spec: LoadedSpec) -> str | None:
    """Why DRBD, read now, is not fit for a failover candidate (None: it is)."""
    try:
        return drbd_in_sync(read_drbd(spec.model.drbd))
    except (DrbdObserveError, OSError, ValueError) as e:
        return f"DRBD cannot be read ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})"


def coord_dir(state_dir: str, node: str) -> str:
    return os.path.join(state_dir, f"coord-{node}")


def read_claim(path: str) -> Claim:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.loads(f.read(65536))
        return Claim(**{k: doc.get(k) for k in Claim.__dataclass_fields__ if k in doc})
    except FileNotFoundError:
        return Claim()
    except (OSError, ValueError, TypeError) as e:
        raise CoordError(f"{path}: unreadable claim ({e}); nothing is decided without it: "
                         "move it away only if this node holds no leader key") from None


class Coordinator:
    def __init__(self, spec: LoadedSpec, node: str, state_dir: str) -> None:
        self.node, self.dir = node, coord_dir(state_dir, node)
        os.makedirs(self.dir, 0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.claim_path = os.path.join(self.dir, "claim.json")
        self.lease_path = os.path.join(self.dir, "lease.json")
        self.heartbeat_path = os.path.join(self.dir, "heartbeat")
        self.claim = read_claim(self.claim_path)
        self.spec = spec
        self.election = Election(client_for(spec.model), spec.model.etcd_prefix())
        self.keeper: subprocess.Popen[bytes] | None = None
        self.watchdog: Watchdog | None = None
        self._fed_for: float | None = None
        self._wd_lock = threading.Lock()
        self._stop = threading.Event()
        self.self_fencing = False  # the last observation found this node demoting itself

    # ---- lifecycle ------------------------------------------------------------------------
    def update(self, spec: LoadedSpec) -> None:
        self.spec = spec
        self.election = Election(client_for(spec.model), spec.model.etcd_prefix())

    def start(self) -> None:
        """The keeper first renews (or grants) once the loop's first observation wrote a heartbeat."""
        self._start_keeper()
        threading.Thread(target=self._feed, name="watchdog-feed", daemon=True).start()

    def _start_keeper(self) -> None:
        f = self.spec.model.failover
        argv = [sys.executable, "-m", "reconciler.coord.lease", *keeper_args(self.spec.model),
                f"--ttl={f.lease_ttl_s}", f"--interval={f.renew_interval_s:g}", f"--heartbeat={self.heartbeat_path}",
                f"--max-heartbeat-age={f.demote_after_s:g}", f"--state={self.lease_path}"]
        if self.claim.held_lease is not None:
            argv.append(f"--adopt={self.claim.held_lease}")
        self.keeper = subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=True)

    def stop(self) -> None:
        """The keeper stops renewing (the lease runs out on the server); an armed watchdog stays
        armed while this node holds the key: it resets the node unless an agent comes back."""
        self._stop.set()
        if self.keeper is not None and self.keeper.poll() is None:
            self.keeper.send_signal(signal.SIGTERM)
            try:
                self.keeper.wait(KEEPER_STOP_S)
            except subprocess.TimeoutExpired:
                self.keeper.kill()
        with self._wd_lock:
            if self.watchdog is not None and self.claim.held_lease is None:
                self.watchdog.disarm()
                self.watchdog = None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.dir, ARMED))

    def keeper_alive(self) -> bool:
        return self.keeper is not None and self.keeper.poll() is None

    def restart_keeper_if_dead(self) -> None:
        if self.keeper is not None and self.keeper.poll() is not None:
            log.warning(f"{self.node}: the lease keeper exited ({self.keeper.returncode}); starting it again")
            self._start_keeper()

    def heartbeat(self) -> None:
        write_heartbeat(self.heartbeat_path)

    # ---- observing ------------------------------------------------------------------------
    def lease_state(self) -> LeaseState | None:
        return read_state(self.lease_path)

    def observe(self) -> CoordObs:
        """One observation.  While this node demotes itself (it holds the key but its keeper has not
        renewed the lease for demote_after_s) etcd is not read: the plan is the same either way, and
        an unreachable etcd would cost a request timeout per step of a demotion that has a budget."""
        nodes = list(self.spec.model.nodes)
        st, now = self.lease_state(), boottime()
        self.self_fencing = self._stale(st, now)
        if self.self_fencing:
            return observe(nodes, None, self.claim, st, now, self.watchdog is not None)
        o = observe(nodes, self.election, self.claim, st, now, self.watchdog is not None)
        if o.reachable and o.epoch is not None:
            after = claims.observed(self.claim, o.epoch, o.leader_epoch)
            if after != self.claim:
                self._save(after)
                o = o.model_copy(update={"remembered_epoch": after.remembered_epoch, "held_epoch": after.held_epoch,
                                         "held_lease": after.held_lease, "held_revision": after.held_revision})
        return o

    def _stale(self, st: LeaseState | None, now: float) -> bool:
        held = self.claim.held_lease
        if held is None or st is None or st.lease != held or st.last_ok_sent is None:
            return False
        return now - st.last_ok_sent >= self.spec.model.failover.demote_after_s

    def _save(self, new: Claim) -> None:
        safefile.write_file(self.claim_path, (json.dumps(asdict(new), sort_keys=True) + "\n").encode())
        self.claim = new

    # ---- the steps ------------------------------------------------------------------------
    def execute(self, spec: LoadedSpec, a: Action) -> str:
        match a.kind:
            case Kind.COORD_ACQUIRE:
                return self._acquire(spec, a)
            case Kind.COORD_RELEASE:
                lease = self.claim.held_lease
                if lease is not None and not self.election.release(lease):
                    raise CoordError("the leader key is not carried by this node's lease any more")
                if lease is None:  # a leader key naming this node that it never acquired (plan: stale_key)
                    self._delete_stale()
                self._save(claims.released(self.claim))
                return "released"
            case Kind.COORD_PUBLISH | Kind.COORD_WITHDRAW:
                lease, e = self.claim.held_lease, self.claim.held_epoch
                if lease is None or e is None:
                    raise CoordError("this node holds no leader key")
                if a.kind is Kind.COORD_PUBLISH:
                    return self._publish(spec, lease, a.target, e)
                if not self.election.withdraw_candidate(lease):
                    raise CoordError("the leader key is not carried by this node's lease any more")
                return ""
            case Kind.WATCHDOG_ARM:
                return self._arm()
            case Kind.WATCHDOG_DISARM:
                return self._disarm()
        raise CoordError(f"{a.kind.value} is not a leadership step")

    def _acquire(self, spec: LoadedSpec, a: Action) -> str:
        p = a.payload
        if not isinstance(p, Acquisition):
            raise CoordError("coord_acquire without what it was decided on")
        st = self.lease_state()
        if st is None or st.lease is None:
            raise CoordError("the lease keeper has no lease")
        cand = (p.candidate, p.candidate_epoch) if p.candidate is not None and p.candidate_epoch is not None else None
        try:
            won = self.election.acquire(self.node, st.lease, p.after_epoch, cand, a.reason)
        except EtcdError:  # sent, no reply: it may have been applied; etcd says whether it was
            v = self.election.read()
            won = (v.holder, v.holder_epoch, v.holder_lease) == (self.node, p.after_epoch + 1, st.lease)
            if not won:
                raise
        if not won:
            raise CoordError(f"etcd no longer shows what the acquisition was decided on (epoch {p.after_epoch}, "
                             "nobody holding the key, the same candidate)")
        self._save(claims.acquired(self.claim, p.after_epoch + 1, st.lease, spec.revision or spec.digest))
        log.warning(f"{self.node}: acquired the leader key at epoch {p.after_epoch + 1}")
        return f"epoch {p.after_epoch + 1}"

    def _publish(self, spec: LoadedSpec, lease: int, node: str, epoch: int) -> str:
        """Publish the peer, decided on an observation that showed DRBD connected.  With DRBD, the
        order closes the race with the fence-peer handler: read its mark, then DRBD afresh, then
        publish only if the mark has not moved (a link that dropped after this DRBD read has a
        handler that either withdraws after the publication or moved the mark before it)."""
        mark = None
        if spec.model.drbd:
            mark = self.election.fence_mark()
            gap = drbd_gap(spec)
            if gap is not None:
                raise CoordError(f"{gap}: {node} is not published")
        if not self.election.publish_candidate(lease, node, epoch, mark):
            raise CoordError("the leader key is not carried by this node's lease any more"
                             + ("" if mark is None else ", or DRBD's fence-peer handler ran since the plan"))
        return ""

    def _delete_stale(self) -> None:
        st = self.lease_state()
        if st is None or st.lease is None or not self.election.release(st.lease):
            raise CoordError("the leader key is not carried by this node's lease")

    def _arm(self) -> str:
        wd = self.spec.model.failover.watchdog
        if wd == "off":
            raise CoordError("watchdog: off")
        with self._wd_lock:
            if self.watchdog is None:
                try:
                    self.watchdog = Watchdog(wd.device, wd.timeout_s)
                except (WatchdogError, OSError) as e:
                    raise CoordError(f"watchdog {wd.device}: {e}") from None
                st = self.lease_state()
                self._fed_for = st.last_ok_sent if st is not None else None
                safefile.write_file(os.path.join(self.dir, ARMED), f"{wd.device}\n".encode())
            if self.watchdog.timeout > wd.timeout_s:
                took = self.watchdog.timeout
                self._disarm_locked()
                raise CoordError(f"the watchdog {wd.device} took a timeout of {took} s, more than "
                                 f"watchdog.timeout_s ({wd.timeout_s}): disarmed, nothing is promoted")
            return f"{self.watchdog.identity}, {self.watchdog.timeout} s"

    def _disarm(self) -> str:
        with self._wd_lock:
            stops = self._disarm_locked()
        return "" if stops else "the driver has nowayout: it resets this node at its timeout"

    def _disarm_locked(self) -> bool:
        if self.watchdog is None:
            return True
        stops = self.watchdog.disarm()
        self.watchdog = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, ARMED))
        return stops

    def _feed(self) -> None:
        """Feed the armed watchdog once per keepalive the keeper got answered, never otherwise."""
        while not self._stop.wait(FEED_POLL_S):
            with self._wd_lock:
                if self.watchdog is None:
                    continue
                st = self.lease_state()
                held = self.claim.held_lease  # renewals of another lease (granted after the key was lost) feed nothing
                sent = st.last_ok_sent if st is not None and st.lease is not None and st.lease == held else None
                if sent is not None and sent != self._fed_for:
                    try:
                        self.watchdog.feed()
                        self._fed_for = sent
                    except (OSError, WatchdogError) as e:
                        log.error(f"{self.node}: feeding the watchdog failed: {e}")


def is_leadership_step(a: Action) -> bool:
    return a.kind in KINDS


def read_only(spec: LoadedSpec, node: str, state_dir: str) -> CoordObs:
    """The leadership part of an observation for `plan` and `status`, which run beside the agent:
    the same reads (etcd, the keeper's state, the claim), nothing written."""
    d = coord_dir(state_dir, node)
    try:
        claim = read_claim(os.path.join(d, "claim.json"))
        election = Election(client_for(spec.model), spec.model.etcd_prefix())
    except (CoordError, CoordConfigError, OSError, ValueError) as e:
        return CoordObs(error=str(e).splitlines()[0][:300])
    return observe(list(spec.model.nodes), election, claim, read_state(os.path.join(d, "lease.json")), boottime(),
                   os.path.exists(os.path.join(d, ARMED)))


# DRBD 8.4 fence-peer exit codes (drbd.conf(5), handlers): 4 = the peer is outdated (IO resumes,
# a promotion proceeds); anything not 3-7 = the helper failed (under `fencing resource-and-stonith`
# IO stays frozen, a promotion is refused).
FENCE_OK, FENCE_REFUSED = 4, 1


def fence_peer(spec: LoadedSpec, node: str, state_dir: str) -> tuple[int, str]:
    """DRBD's fence-peer handler, backed by etcd: called by the kernel (IO frozen) when this node,
    Primary or promoting, loses its DRBD peer.  It succeeds only if this node holds the leader key
    (etcd shows the key at its claimed epoch under its claimed lease) and withdrew the failover
    candidate under that lease in one transaction: from then on the peer cannot take over, so
    writing on alone cannot lose anything a takeover would need.  Otherwise (the peer acquired
    the key first, or etcd cannot be reached) it fails and IO stays frozen: this node is demoting
    itself, or its watchdog resets it."""
    if spec.model.failover.mode != "automatic":
        return FENCE_REFUSED, "fence-peer: failover.mode is not automatic: nothing decides who may write"
    try:
        claim = read_claim(os.path.join(coord_dir(state_dir, node), "claim.json"))
    except CoordError as e:
        return FENCE_REFUSED, f"fence-peer: {e}"
    if claim.held_lease is None or claim.held_epoch is None:
        return FENCE_REFUSED, f"fence-peer: {node} does not hold the leader key: IO stays frozen"
    try:
        election = Election(client_for(spec.model), spec.model.etcd_prefix())
    except (CoordConfigError, OSError, ValueError) as e:
        return FENCE_REFUSED, f"fence-peer: {str(e).splitlines()[0][:300]}: IO stays frozen"
    try:
        v = election.read()
        if (v.holder, v.holder_epoch, v.holder_lease) != (node, claim.held_epoch, claim.held_lease):
            return FENCE_REFUSED, (f"fence-peer: etcd shows {v.holder or 'nobody'} holding the leader key (epoch "
                                   f"{v.holder_epoch}), not {node} at epoch {claim.held_epoch}: IO stays frozen")
        if not election.withdraw_candidate(claim.held_lease, fenced_by=node):
            return FENCE_REFUSED, f"fence-peer: the leader key is no longer carried by {node}'s lease: IO stays frozen"
    except (EtcdError, ValueError) as e:
        return FENCE_REFUSED, f"fence-peer: etcd: {str(e).splitlines()[0][:300]}: IO stays frozen"
    return FENCE_OK, (f"fence-peer: {node} holds the leader key (epoch {claim.held_epoch}) and withdrew the "
                      "failover candidate: the peer cannot take over; IO goes on")
