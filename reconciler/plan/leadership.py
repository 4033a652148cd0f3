"""Who is Primary in automatic failover mode, and the etcd steps that make it so.

In manual mode the spec's `primary:` is the Primary.  In automatic mode the Primary is the
holder of the leader key in etcd (bound to the holder's lease, with an epoch that only
grows); `primary:` is the *preferred* Primary.  This module reads the coordination part of
this node's observation (`CoordObs`: one linearizable etcd read, the lease keeper's state,
the agent's remembered epoch and claim) and says which node this node must plan for:

- **holder**: this node acquired the key (its state file says at which epoch, with which
  lease), the keeper still has that lease, and its last answered keepalive was sent less
  than `demote_after_s` ago.  It plans as the Primary.
- **self-fence**: it acquired the key but that no longer holds (no renewal for
  `demote_after_s`, or another lease): it demotes at once, waiting for nobody, so that it is
  done before its lease can expire on the server (the watchdog resets it otherwise).
- **handing over**: the holder's spec names the peer in a revision other than the one it
  acquired under (a planned switchover), and the peer is the published candidate: it
  demotes, then releases the key; the peer acquires it at the next epoch.
- otherwise it plans for the node etcd shows holding the key (or, while nobody does, the
  published candidate, which is about to), and acquires the key itself when it may:
  as the published candidate of the last epoch; as the holder of the last epoch (its claim
  says so, or etcd's record of the acquisition does, when the agent died before writing its
  claim) when no candidate is published (nobody else can have written since); at the very first epoch
  if the spec prefers it; or when the operator declared the peer `fenced:`.

A node that took the key over as the candidate (epoch 2 or later) proceeds without an
unreachable peer: that peer's lease ended on the server before the acquisition could
succeed, and a holder stops being writable by its own deadline, earlier.  That waiver never
extends to discarding anything: a rewind still needs `fenced:` (plan/postgres.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from reconciler.model import CoordObs, DrbdObs, NodeObservation, PostgresObs
from reconciler.plan import pg_position
from reconciler.plan.actions import Action, Guard, Kind
from reconciler.plan.kinds import Acquisition
from reconciler.spec.models import Spec

ETCD = "etcd"


@dataclass(frozen=True)
class Role:
    primary: str  # the node this node plans for as the Primary, or "none"
    holder: bool = False
    self_fence: bool = False
    took_over: bool = False  # holder at an epoch after the first: the previous holder's lease ended
    handing_over: bool = False
    stale_key: bool = False  # the leader key names this node under its lease, but it never acquired that epoch
    why: str = ""


def automatic(spec: Spec) -> bool:
    return spec.failover.mode == "automatic"


def revision_of(obs: NodeObservation, digest: str) -> str:
    """The revision this node applies: its git commit, else the spec's digest."""
    return obs.revision or digest


def seen_epoch(c: CoordObs, peer: NodeObservation | None) -> int:
    """The highest epoch this agent, or the peer's when it answers, has ever seen."""
    theirs = peer.coord.remembered_epoch if peer is not None and peer.coord is not None else 0
    return max(c.remembered_epoch, theirs)


def holds(spec: Spec, c: CoordObs, seen: int = 0) -> bool:
    """This node holds the leader key with a fresh renewal."""
    if c.held_epoch is None or c.lease is None or c.lease != c.held_lease:
        return False
    if c.reachable and (c.leader_epoch != c.held_epoch or (c.epoch or 0) < max(seen, c.remembered_epoch)):
        return False  # the key is gone, or etcd went back to an older epoch than was seen
    return c.since_renewal_s is not None and c.since_renewal_s < spec.failover.demote_after_s


def role(spec: Spec, me: str, own: NodeObservation, digest: str, peer_obs: NodeObservation | None = None) -> Role:
    if not automatic(spec):
        return Role(primary=spec.primary)
    c = own.coord or CoordObs(error="not observed")
    peer = spec.peer_of(me)
    seen = seen_epoch(c, peer_obs)
    if holds(spec, c, seen):
        e = c.held_epoch
        if (peer is not None and spec.primary == peer and peer not in spec.fenced
                and revision_of(own, digest) != c.held_revision
                and c.reachable and c.candidate == peer and c.candidate_epoch == e):
            return Role(primary=peer, holder=True, handing_over=True,
                        why=f"planned switchover: the spec now prefers {peer}, the synchronous candidate")
        return Role(primary=me, holder=True, took_over=(e or 0) >= 2, why=f"{me} holds the leader key (epoch {e})")
    if c.held_epoch is not None and c.held_lease is not None:
        return Role(primary="none", self_fence=True,
                    why=f"{me} held the leader key (epoch {c.held_epoch}) but {_lost(spec, c, seen)}: "
                        "it demotes itself before its lease can expire")
    if not c.reachable:
        return Role(primary="none", why=f"etcd cannot be read ({c.error or 'no answer'}): the Primary is unknown")
    if c.leader == me and c.leader_lease is not None and c.leader_lease == c.lease:
        return Role(primary="none", stale_key=True,
                    why=f"the leader key names {me} at epoch {c.leader_epoch}, which it never acquired (an etcd "
                        "restored from a snapshot, or a lost state file): it demotes, then deletes that key")
    if c.leader == me:  # under a lease this node does not hold: an old keeper's, or a restored snapshot's
        return Role(primary="none", why=f"the leader key names {me} (epoch {c.leader_epoch}) under a lease it does "
                                        "not hold: it waits for that lease to expire")
    if c.leader is not None:
        return Role(primary=c.leader, why=f"{c.leader} holds the leader key (epoch {c.leader_epoch})")
    if c.candidate is not None and c.candidate != me and c.candidate_epoch == c.epoch:
        return Role(primary=c.candidate, why=f"nobody holds the leader key; {c.candidate} is the candidate")
    return Role(primary="none", why="nobody holds the leader key")


def _lost(spec: Spec, c: CoordObs, seen: int) -> str:
    if c.lease is None or c.lease != c.held_lease:
        return "its keeper no longer has the lease that carries it"
    if c.reachable and (c.epoch or 0) < max(seen, c.remembered_epoch):
        return f"etcd shows epoch {c.epoch}, older than epoch {max(seen, c.remembered_epoch)} already seen"
    if c.reachable and c.leader_epoch != c.held_epoch:
        return "etcd no longer shows it holding the key"
    since = f"{c.since_renewal_s:.1f} s" if c.since_renewal_s is not None else "ever"
    return f"has had no renewal for {since} (demote_after_s: {spec.failover.demote_after_s:g})"


def _eligible(spec: Spec, me: str, c: CoordObs) -> tuple[bool, str]:
    e = c.epoch or 0
    peer = spec.peer_of(me)
    if c.candidate is not None and c.candidate_epoch == e:
        if c.candidate == me:
            return True, f"{me} is the synchronous candidate published at epoch {e}"
        return False, f"{c.candidate} is the candidate published at epoch {e}"
    if e == 0:
        if spec.primary == me:
            return True, f"no epoch yet and the spec prefers {me}"
        return False, f"no epoch yet: the spec prefers {spec.primary}"
    if c.held_epoch == e:
        return True, f"{me} held the last epoch ({e}) and no candidate is published: nobody else can have written since"
    if c.last_node == me and c.last_epoch == e:  # acquired, but the agent died before its claim was written
        return True, (f"etcd records that {me} acquired the last epoch ({e}) and no candidate is published: "
                      "nobody else can have written since")
    if peer is not None and peer in spec.fenced:
        return True, f"the operator declared {peer} fenced (accepting the loss of what only it had)"
    return False, (f"nobody holds the leader key and no synchronous candidate is published at epoch {e}: "
                   f"{me} may lack commits the last holder acknowledged; it waits for that holder to come back "
                   f"(or declare `fenced: [{peer}]` to take over, accepting that loss)")


def acquire(spec: Spec, me: str, own: NodeObservation, peer: NodeObservation | None) -> list[Action]:
    """ACQUIRE for a node that holds nothing, when etcd shows nobody holding the key.  Epochs
    remembered by this agent, and by the peer's when it answers, must not exceed etcd's."""
    c = own.coord
    if c is None or not c.reachable or c.leader is not None or c.epoch is None:
        return []
    if c.held_epoch is not None and c.held_epoch != c.epoch:
        return []  # the agent forgets a claim that etcd has moved past
    ok, why = _eligible(spec, me, c)
    if not ok and c.candidate is not None and c.candidate != me and c.candidate_epoch == c.epoch:
        return []  # the candidate acquires: nothing to do or to wait for here
    seen = seen_epoch(c, peer)
    who = me if seen == c.remembered_epoch else (peer.node if peer is not None else "the peer")
    guards = [Guard("eligible", ok, why),
              Guard("epoch_not_back", c.epoch >= seen,
                    f"etcd shows epoch {c.epoch} but {who} has seen epoch {seen}: etcd went back (restored from "
                    "an old snapshot?); nothing is decided on it until an operator puts the epoch key back "
                    f"(etcdctl put {spec.etcd_prefix()}/epoch {seen}; etcdctl del {spec.etcd_prefix()}/candidate)"),
              Guard("lease_fresh", c.since_renewal_s is not None and c.since_renewal_s < spec.failover.demote_after_s,
                    "the lease keeper has no freshly renewed lease")]
    return [Action(Kind.COORD_ACQUIRE, ETCD, f"acquire the leader key at epoch {c.epoch + 1}: {why}",
                   guards=tuple(guards), payload=Acquisition(c.epoch, c.candidate, c.candidate_epoch))]


PROMOTIONS = (Kind.PG_PROMOTE, Kind.PG_START_PRIMARY, Kind.DRBD_PRIMARY)


def confirm_promotions(own: NodeObservation, actions: list[Action]) -> list[Action]:
    """A promotion also needs this observation's etcd read to show this node holding the key: the
    keeper's clock alone says so until the deadline, and a paused machine's clock lags."""
    c = own.coord
    if c is None or c.reachable:
        return actions
    g = Guard("holder_confirmed", False, f"etcd cannot be read ({c.error or 'no answer'}): nothing is promoted "
              "until it shows this node holding the leader key")
    return [replace(a, guards=a.guards + (g,)) if a.kind in PROMOTIONS else a for a in actions]


def drbd_in_sync(drbd: Mapping[str, DrbdObs]) -> str | None:
    """Why these DRBD resources are not fit for a failover candidate (None: each is Connected
    with an UpToDate peer disk)."""
    for name, d in sorted(drbd.items()):
        if not (d.configured and d.connection == "Connected" and d.peer_disk == "UpToDate"):
            return f"DRBD {name} is {d.connection}, peer disk {d.peer_disk}"
    return None


def _on_this_timeline(pg: PostgresObs, peer: str) -> Guard:
    """A standby that streamed from this node before it was promoted is `sync` at once, but
    until it has received WAL past the fork it is still on the old timeline: promoted then, it
    would fork a timeline of the same number as this one (found by the long profile)."""
    start = pg_position.timeline_start(pg)
    flushed = pg_position.lsn(pg.standby_flush.get(peer))
    ok = start is None or (flushed is not None and flushed > start)
    return Guard("candidate_on_this_timeline", ok,
                 f"{peer} has flushed up to {pg_position.fmt(flushed)}, not yet past the start of timeline "
                 f"{pg.timeline} at {pg_position.fmt(start)}")


def holder_steps(spec: Spec, me: str, own: NodeObservation) -> tuple[list[Action], list[Action]]:
    """(before promotion, after promotion) for the holder: arm the watchdog before anything is
    promoted; keep PostgreSQL synchronous with the peer and publish the peer as the candidate
    only while it is synchronous (and DRBD connected with an UpToDate peer disk); withdraw the
    candidate before synchronous replication is relaxed."""
    c = own.coord
    assert c is not None and c.held_epoch is not None
    before: list[Action] = []
    if spec.failover.watchdog != "off" and not c.watchdog_armed:
        before.append(Action(Kind.WATCHDOG_ARM, "watchdog", "armed before promotion: it resets this node if a "
                             "self-demotion hangs"))
    peer, pg = spec.peer_of(me), own.postgres
    if peer is None or pg is None or not pg.running or pg.in_recovery is not False:
        return before, []
    after: list[Action] = []
    e = c.held_epoch
    published = c.reachable and c.candidate == peer and c.candidate_epoch == e
    drbd_gap = drbd_in_sync(own.drbd)
    if peer in pg.sync_standbys and drbd_gap is None:
        if not published:
            after.append(Action(Kind.COORD_PUBLISH, peer, f"{peer} is synchronous: it becomes the failover "
                                f"candidate of epoch {e}", guards=(_on_this_timeline(pg, peer),)))
        return before, after
    if peer in pg.streaming_standbys and peer not in pg.sync_names:
        after.append(Action(Kind.PG_SYNC_ON, peer, f"{peer} streams from here: commits wait for it"))
    gap = drbd_gap if peer in pg.sync_standbys else f"{peer} is not a synchronous standby"
    if published:
        after.append(Action(Kind.COORD_WITHDRAW, peer, f"{gap}: it is no longer fit to take over"))
    if peer not in pg.streaming_standbys and pg.sync_names:
        withdrawn = c.reachable and not published
        after.append(Action(Kind.PG_SYNC_OFF, "postgres", f"{peer} does not stream from here: commits stop waiting "
                            "for it (no failover candidate until it is synchronous again)",
                            guards=(Guard("candidate_withdrawn", withdrawn,
                                          f"{peer} must be withdrawn as the candidate first"
                                          + ("" if c.reachable else " (etcd cannot be read)")),)))
    return before, after


def release(own: NodeObservation, acting_writable: bool, stale: bool = False) -> Action:
    g = Guard("demoted", not acting_writable, "this node must be demoted first (nothing writable, DRBD Secondary)")
    why = ("delete the leader key that names this node at an epoch it never acquired, once demoted" if stale else
           "planned switchover: release the leader key once demoted; the candidate acquires it at the next epoch")
    return Action(Kind.COORD_RELEASE, ETCD, why, guards=(g,))


def serving(own: NodeObservation) -> bool:
    """Anything here can still write or serve: a writable PostgreSQL, a DRBD Primary, a mount of
    one, or a running service (floating addresses alone serve nothing)."""
    pg = own.postgres
    if pg is not None and pg.running and pg.in_recovery is not True:
        return True
    if any(d.configured and d.role == "Primary" for d in own.drbd.values()) or own.mounts:
        return True
    return any(s.active for s in own.services.values())


def disarm(own: NodeObservation, acting: bool) -> list[Action]:
    c = own.coord
    if c is None or not c.watchdog_armed or acting:
        return []
    return [Action(Kind.WATCHDOG_DISARM, "watchdog", "this node is demoted and holds no leader key: the watchdog "
                   "is disarmed (magic close)")]


def notes(r: Role, own: NodeObservation) -> list[str]:
    if r.why and (r.self_fence or r.handing_over or (own.coord is not None and not own.coord.reachable)):
        return [r.why]
    return []
