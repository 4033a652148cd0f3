"""The leadership part of a node's observation (automatic failover): `CoordObs`.

Three sources, read together: one linearizable etcd read of the leader key, the epoch and the
candidate (`coord/election.py`); the lease keeper's state file (its lease and the send time of
its last answered keepalive, CLOCK_BOOTTIME); the agent's own memory (`coord/claim.py`).  An
etcd that cannot answer, or whose keys name a node that is not in the spec, is reported as not
reachable with the reason: unknown, never "nobody holds it".
"""

from __future__ import annotations

from reconciler.coord.claim import Claim
from reconciler.coord.election import Election
from reconciler.coord.etcd import EtcdError
from reconciler.coord.lease import LeaseState
from reconciler.model import CoordObs


def observe(nodes: list[str], election: Election | None, claim: Claim, keeper: LeaseState | None, now: float,
            watchdog_armed: bool = False) -> CoordObs:
    """`election` None: etcd is not read (reported as not reachable, with the reason)."""
    since = None
    if keeper is not None and keeper.lease is not None and keeper.last_ok_sent is not None:
        since = max(0.0, now - keeper.last_ok_sent)
    base = CoordObs(remembered_epoch=claim.remembered_epoch, held_epoch=claim.held_epoch,
                    held_lease=claim.held_lease, held_revision=claim.held_revision,
                    lease=keeper.lease if keeper is not None else None, since_renewal_s=since,
                    watchdog_armed=watchdog_armed)
    if election is None:
        return base.model_copy(update={"error": "not read: this node is demoting itself (no renewal of its lease "
                                                "for demote_after_s); etcd is read again once the lease is renewed or gone"})
    try:
        v = election.read()
    except (EtcdError, ValueError) as e:
        return base.model_copy(update={"error": f"etcd: {e}".splitlines()[0][:300]})
    for who, what in ((v.holder, "leader"), (v.candidate, "candidate")):
        if who is not None and who not in nodes:
            return base.model_copy(update={"error": f"etcd: the {what} key names no node of the spec"})
    last = v.last or {}
    return base.model_copy(update={
        "reachable": True, "epoch": v.epoch, "leader": v.holder, "leader_epoch": v.holder_epoch,
        "leader_lease": v.holder_lease, "candidate": v.candidate, "candidate_epoch": v.candidate_epoch,
        "last_node": _str(last.get("node")), "last_epoch": _int(last.get("epoch")), "last_at": _float(last.get("at")),
        "last_why": _str(last.get("why"))})


def _str(v: object) -> str | None:
    return v[:500] if isinstance(v, str) else None


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _float(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
