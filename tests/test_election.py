"""reconciler.coord.election against three real etcd 3.4 members in namespaces: one holder at a
time, epochs that only grow, a candidate written only under the holder's lease."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from reconciler.coord.election import Election
from tests.conftest import need_etcd
from tests.etcd_cluster import EtcdCluster, etcd_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    need_etcd()
    with etcd_cluster(tmp_path_factory.mktemp("etcd-election")) as c:
        yield c


def _election(cluster: EtcdCluster, prefix: str) -> Election:
    return Election(cluster.client(timeout=2.0), prefix)


def test_acquire_hold_expire_and_the_next_epoch(cluster: EtcdCluster) -> None:
    e = _election(cluster, f"/el/{time.monotonic_ns()}")
    first = cluster.run("mx1", e.read)
    assert (first.epoch, first.holder, first.candidate) == (0, None, None)
    lease1, _ = cluster.run("mx1", e.client.grant, 2)
    assert cluster.run("mx1", e.acquire, "mx1", lease1, 0)
    held = cluster.run("mx2", e.read)
    assert (held.epoch, held.holder, held.holder_epoch, held.holder_lease) == (1, "mx1", 1, lease1)

    lease2, _ = cluster.run("mx2", e.client.grant, 30)
    assert not cluster.run("mx2", e.acquire, "mx2", lease2, 1)  # mx1 holds it
    assert cluster.run("mx1", e.publish_candidate, lease1, "mx2", 1)
    assert not cluster.run("mx2", e.publish_candidate, lease2, "mx2", 1)  # not the holder's lease
    assert cluster.run("wit", e.read).candidate == "mx2"

    t0 = time.monotonic()
    while cluster.run("mx2", e.read).holder is not None:  # mx1 stops renewing: its key goes
        assert time.monotonic() - t0 < 10
        time.sleep(0.2)
    after = cluster.run("mx2", e.read)
    assert (after.epoch, after.candidate, after.candidate_epoch) == (1, "mx2", 1)  # the candidate outlives it
    assert not cluster.run("mx2", e.acquire, "mx2", lease2, 0, ("mx2", 1))  # a stale epoch never wins
    assert not cluster.run("mx2", e.acquire, "mx2", lease2, 1)  # decided on "no candidate": not what etcd holds
    assert cluster.run("mx2", e.acquire, "mx2", lease2, 1, ("mx2", 1))
    now = cluster.run("mx1", e.read)
    assert (now.epoch, now.holder, now.candidate) == (2, "mx2", None)  # the old candidate is cleared
    assert cluster.run("mx2", e.publish_candidate, lease2, "mx1", 2)
    assert not cluster.run("mx1", e.release, lease1)
    assert cluster.run("mx2", e.release, lease2)  # a planned switchover: the candidate stays, for it to acquire
    rel = cluster.run("mx1", e.read)
    assert (rel.holder, rel.epoch, rel.candidate, rel.candidate_epoch) == (None, 2, "mx1", 2)


def test_a_race_has_exactly_one_winner(cluster: EtcdCluster) -> None:
    """Both nodes try to acquire at the same epoch at once, from their own namespaces, 20 times."""
    for round_ in range(20):
        e = _election(cluster, f"/race/{time.monotonic_ns()}/{round_}")
        leases = {n: cluster.run(n, e.client.grant, 5)[0] for n in ("mx1", "mx2")}
        results: dict[str, bool] = {}
        go = threading.Barrier(2)
        threads = [threading.Thread(target=_attempt, args=(cluster, e.prefix, n, leases[n], go, results))
                   for n in ("mx1", "mx2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(results.values()) == [False, True], results
        holder = cluster.run("wit", e.read)
        assert holder.epoch == 1 and results[holder.holder or ""] is True
        for n, lease in leases.items():
            cluster.run(n, e.client.revoke, lease)


def _attempt(cluster: EtcdCluster, prefix: str, node: str, lease: int, go: threading.Barrier,
             results: dict[str, bool]) -> None:
    client = _election(cluster, prefix)
    go.wait()
    results[node] = cluster.run(node, client.acquire, node, lease, 0)


def test_the_leadership_part_of_the_observation(cluster: EtcdCluster) -> None:
    """observe/coord.py from real etcd: the holder's view (what plan/leadership.py reads), a
    member cut off from the quorum (unknown, never "nobody"), and a key naming a stranger."""
    import json

    from reconciler.coord.claim import Claim, acquired
    from reconciler.coord.lease import LeaseState
    from reconciler.observe.coord import observe
    from reconciler.plan.leadership import holds
    from tests.sim.specs import make_spec

    prefix = f"/obs/{time.monotonic_ns()}"
    e = _election(cluster, prefix)
    lease, _ = cluster.run("mx1", e.client.grant, 30)
    assert cluster.run("mx1", e.acquire, "mx1", lease, 0)
    claim = acquired(Claim(), 1, lease, "r1")
    keeper = LeaseState(lease=lease, ttl=30, last_ok_sent=100.0)
    nodes = ["mx1", "mx2"]
    o = cluster.run("mx1", observe, nodes, e, claim, keeper, 101.5, True)
    assert (o.reachable, o.epoch, o.leader, o.leader_epoch, o.leader_lease) == (True, 1, "mx1", 1, lease)
    assert (o.held_epoch, o.held_lease, o.lease, o.since_renewal_s, o.watchdog_armed) == (1, lease, lease, 1.5, True)
    spec = make_spec("mx1", automatic=True).model
    assert holds(spec, o)
    assert not holds(spec, cluster.run("mx1", observe, nodes, e, claim, keeper, 104.0))  # demote_after_s is 3

    cut_off = Election(cluster.client("mx1", timeout=1.0), prefix)
    cluster.cut("mx1", "mx2")
    cluster.cut("mx1", "wit")
    try:
        lost = cluster.run("mx1", observe, nodes, cut_off, claim, keeper, 101.0)
    finally:
        cluster.heal("mx1", "mx2")
        cluster.heal("mx1", "wit")
    assert not lost.reachable and lost.error and lost.leader is None and lost.epoch is None
    assert lost.held_epoch == 1 and holds(spec, lost)  # the keeper's clock alone says so, until the deadline

    cluster.wait_healthy()
    cluster.run("mx1", e.client.put, f"{prefix}/candidate", json.dumps({"node": "mx9", "epoch": 1}))
    odd = cluster.run("mx2", observe, nodes, e, Claim(), None, 0.0)
    assert not odd.reachable and "names no node of the spec" in (odd.error or "")


def test_drbd_fence_peer_handler_succeeds_only_for_the_holder(cluster: EtcdCluster, tmp_path) -> None:
    """`reconciler fence-peer` (agent/coordination.fence_peer) against real etcd: exit 4 only when
    this node holds the leader key and has withdrawn the candidate under its lease; 1 otherwise
    (another holder, no claim, a stale claim, etcd cut off), so DRBD keeps IO frozen."""
    import dataclasses
    import json

    from reconciler.agent.coordination import FENCE_OK, FENCE_REFUSED, coord_dir, fence_peer
    from reconciler.coord.claim import Claim, acquired
    from tests.sim.specs import make_spec

    base = make_spec("mx1", automatic=True)
    f = base.model.failover
    etcd = f.etcd.model_copy(update={"endpoints": cluster.endpoints, "prefix": f"/fence/{time.monotonic_ns()}",
                                     "request_timeout_s": 1.0})
    spec = dataclasses.replace(base, model=base.model.model_copy(update={"failover": f.model_copy(update={"etcd": etcd})}))
    e = _election(cluster, spec.model.etcd_prefix())

    def claim(node: str, c: Claim) -> None:
        d = coord_dir(str(tmp_path), node)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "claim.json"), "w") as fh:
            json.dump(dataclasses.asdict(c), fh)

    def fence(node: str) -> tuple[int, str]:
        return cluster.run(node, fence_peer, spec, node, str(tmp_path))

    assert fence("mx1")[0] == FENCE_REFUSED  # no claim at all
    lease, _ = cluster.run("mx1", e.client.grant, 30)
    assert cluster.run("mx1", e.acquire, "mx1", lease, 0)
    assert cluster.run("mx1", e.publish_candidate, lease, "mx2", 1)
    claim("mx1", acquired(Claim(), 1, lease, "r1"))
    claim("mx2", Claim(remembered_epoch=1))
    code, line = fence("mx2")
    assert code == FENCE_REFUSED and "does not hold" in line
    claim("mx1", acquired(Claim(), 1, lease + 1, "r1"))  # a claim under another lease: not the holder
    assert fence("mx1")[0] == FENCE_REFUSED
    assert cluster.run("wit", e.read).candidate == "mx2"
    claim("mx1", acquired(Claim(), 1, lease, "r1"))
    cluster.cut("mx1", "mx2")
    cluster.cut("mx1", "wit")
    try:
        code, line = fence("mx1")  # the holder cut off: it cannot withdraw, so IO stays frozen
    finally:
        cluster.heal("mx1", "mx2")
        cluster.heal("mx1", "wit")
    assert code == FENCE_REFUSED and "etcd" in line, line
    assert cluster.run("wit", e.read).candidate == "mx2"
    cluster.wait_healthy()
    code, line = fence("mx1")
    assert code == FENCE_OK, line
    assert cluster.run("wit", e.read).candidate is None  # the peer can no longer take over
    assert cluster.run("wit", e.fence_mark) > 0  # and a publication decided before cannot undo that


def test_a_publication_decided_before_the_fence_peer_handler_ran_is_refused(cluster: EtcdCluster) -> None:
    """The holder's agent reads the fence mark, then DRBD (connected), then publishes; DRBD's
    fence-peer handler, run in between because the link dropped, withdrew the candidate and moved
    the mark: the publication fails instead of undoing the withdrawal.  Decided afresh (new mark,
    DRBD connected again), it succeeds and clears the mark."""
    e = _election(cluster, f"/mark/{time.monotonic_ns()}")
    lease, _ = cluster.run("mx1", e.client.grant, 30)
    assert cluster.run("mx1", e.acquire, "mx1", lease, 0)
    mark = cluster.run("mx1", e.fence_mark)
    assert mark == 0
    assert cluster.run("mx1", e.withdraw_candidate, lease, "mx1")  # the handler, between the read and the txn
    assert not cluster.run("mx1", e.publish_candidate, lease, "mx2", 1, mark)
    assert cluster.run("wit", e.read).candidate is None
    fresh = cluster.run("mx1", e.fence_mark)
    assert fresh > 0
    assert cluster.run("mx1", e.publish_candidate, lease, "mx2", 1, fresh)
    assert cluster.run("wit", e.read).candidate == "mx2" and cluster.run("wit", e.fence_mark) == 0
    assert cluster.run("mx1", e.withdraw_candidate, lease)  # the agent's own withdrawal writes no mark
    assert cluster.run("wit", e.fence_mark) == 0
    assert cluster.run("mx1", e.publish_candidate, lease, "mx2", 1)  # no DRBD: no mark compared
