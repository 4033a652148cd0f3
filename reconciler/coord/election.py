"""The leader key, the epoch and the failover candidate in etcd, each change one transaction.

Keys below the cluster's prefix:
- `leader`    {"node", "epoch"}, bound to the holder's lease: it disappears with the lease.
- `epoch`     the number of the last leadership, never leased, only ever incremented, in the
              same transaction that creates `leader`; so epochs strictly grow, and an agent that
              remembers a higher one than etcd shows knows etcd went back (a restored snapshot).
- `candidate` {"node", "epoch"}: the standby the holder of `epoch` declares fit to take over (it
              is synchronous); written and withdrawn only under the holder's lease.

Who may acquire, and when, is the planner's decision; this module only performs it atomically and
reports what etcd holds.  Every read is linearizable; an EtcdError means "unknown".
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from reconciler.coord.etcd import (
    EtcdClient,
    KeyValue,
    cmp_create_revision,
    cmp_lease,
    cmp_mod_revision,
    cmp_value,
    op_delete,
    op_put,
    op_range,
)


@dataclass(frozen=True)
class Leadership:
    """What etcd holds now."""

    epoch: int  # the last epoch handed out (0: never)
    holder: str | None  # the node whose lease carries `leader`; None: nobody holds it
    holder_epoch: int | None
    holder_lease: int | None
    candidate: str | None
    candidate_epoch: int | None
    revision: int  # etcd's revision of this read
    last: dict[str, object] | None = None  # the last acquisition: node, epoch, at (Unix time), why


def _last(kv: KeyValue | None) -> dict[str, object] | None:
    if kv is None:
        return None
    try:
        d = json.loads(kv.value)
    except ValueError:
        return None
    return {k: d[k] for k in ("node", "epoch", "at", "why") if k in d} if isinstance(d, dict) else None


def _doc(kv: KeyValue | None) -> tuple[str | None, int | None]:
    if kv is None:
        return None, None
    try:
        d = json.loads(kv.value)
        return str(d["node"]), int(d["epoch"])
    except (ValueError, KeyError, TypeError):
        return "(unreadable)", None


def candidate_doc(node: str, epoch: int) -> str:
    """The candidate key's value, byte for byte (an acquisition compares it)."""
    return json.dumps({"node": node, "epoch": epoch})


class Election:
    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def read(self) -> Leadership:
        r = self.client.txn([], [op_range(self.key("epoch")), op_range(self.key("leader")),
                                 op_range(self.key("candidate")), op_range(self.key("acquired"))])
        epoch_kv, leader_kv, cand_kv, last_kv = (kvs[0] if kvs else None for kvs in r.ranges)
        holder, holder_epoch = _doc(leader_kv)
        cand, cand_epoch = _doc(cand_kv)
        return Leadership(epoch=int(epoch_kv.value) if epoch_kv is not None else 0, holder=holder,
                          holder_epoch=holder_epoch, holder_lease=leader_kv.lease if leader_kv else None,
                          candidate=cand, candidate_epoch=cand_epoch, revision=r.revision, last=_last(last_kv))

    def acquire(self, node: str, lease: int, after_epoch: int, candidate: tuple[str, int] | None = None,
                why: str = "") -> bool:
        """Become the holder at epoch `after_epoch + 1`, only if nobody holds `leader`, the last
        epoch is still `after_epoch` and the candidate key is still `candidate` (None: absent):
        exactly what the caller decided on.  The candidate key is cleared: it belonged to the
        previous epoch.  `acquired` records who, when (wall clock, for people) and why."""
        epoch_key, leader_key, cand_key = self.key("epoch"), self.key("leader"), self.key("candidate")
        new = after_epoch + 1
        compare = [cmp_create_revision(leader_key, 0)]
        compare.append(cmp_create_revision(epoch_key, 0) if after_epoch == 0 else cmp_value(epoch_key, str(after_epoch)))
        compare.append(cmp_create_revision(cand_key, 0) if candidate is None
                       else cmp_value(cand_key, candidate_doc(*candidate)))
        note = json.dumps({"node": node, "epoch": new, "at": round(time.time(), 3), "why": why[:500]})
        r = self.client.txn(compare, [op_put(leader_key, json.dumps({"node": node, "epoch": new}), lease),
                                      op_put(epoch_key, str(new)), op_delete(self.key("candidate")),
                                      op_put(self.key("acquired"), note)])
        return r.succeeded

    def release(self, lease: int) -> bool:
        """Give the leader key up (a planned switchover), only while this lease carries it.  The
        candidate key stays: the candidate acquires the key at the next epoch."""
        leader_key = self.key("leader")
        r = self.client.txn([cmp_lease(leader_key, lease)], [op_delete(leader_key)])
        return r.succeeded

    def fence_mark(self) -> int:
        """The mod_revision of `drbd_fenced` (0: absent): what a publication is decided on."""
        r = self.client.txn([], [op_range(self.key("drbd_fenced"))])
        kvs = r.ranges[0] if r.ranges else ()
        return kvs[0].mod_revision if kvs else 0

    def publish_candidate(self, lease: int, node: str, epoch: int, fence_mark: int | None = None) -> bool:
        """Declare `node` fit to take over after `epoch`, only while this lease carries `leader`.

        With `fence_mark` (DRBD configured): also only if DRBD's fence-peer handler has not
        written `drbd_fenced` since the caller read `fence_mark` and then saw DRBD connected, so
        that a publication decided on a connection that has since dropped cannot undo the
        handler's withdrawal; the mark is cleared with the publication."""
        compare = [cmp_lease(self.key("leader"), lease)]
        success = [op_put(self.key("candidate"), candidate_doc(node, epoch))]
        if fence_mark is not None:
            compare.append(cmp_mod_revision(self.key("drbd_fenced"), fence_mark))
            success.append(op_delete(self.key("drbd_fenced")))
        return self.client.txn(compare, success).succeeded

    def withdraw_candidate(self, lease: int, fenced_by: str | None = None) -> bool:
        """Withdraw the candidate, only while this lease carries `leader`.  `fenced_by` (DRBD's
        fence-peer handler on that node) also writes `drbd_fenced`, which a publication decided
        before it then fails on."""
        success = [op_delete(self.key("candidate"))]
        if fenced_by is not None:
            note = json.dumps({"node": fenced_by, "at": round(time.time(), 3)})
            success.append(op_put(self.key("drbd_fenced"), note))
        return self.client.txn([cmp_lease(self.key("leader"), lease)], success).succeeded
