"""The planner in automatic failover mode, case by case (plan/leadership.py): each test gives one
node's observation with a chosen leadership part and reads the plan."""

from __future__ import annotations

from reconciler.model import CoordObs, NodeObservation
from reconciler.plan.actions import Kind, Plan
from reconciler.plan.planner import plan
from tests.sim.cluster import SimCluster
from tests.sim.specs import make_spec

SPEC = make_spec("mx1", automatic=True)


def _converged() -> SimCluster:
    """mx1 holds the key (epoch 1) and serves, mx2 is its synchronous standby and candidate."""
    c = SimCluster([SPEC])
    for name in ("mx1", "mx2"):
        c.world.etcd.keeper_step(c.world, name)  # type: ignore[union-attr]
    for _ in range(30):
        c.tick(1.0, renew=True)
        for name in ("mx1", "mx2"):
            c.agent_step(name)
        c.replicate()
    assert c.world.etcd.keys.leader is not None and c.world.etcd.keys.candidate == ("mx2", 1)  # type: ignore[union-attr]
    return c


def _plan(c: SimCluster, name: str, peer: bool = True, spec=SPEC, **coord: object) -> Plan:  # type: ignore[no-untyped-def]
    own = c.observe(name)
    assert own.coord is not None
    own = own.model_copy(update={"coord": own.coord.model_copy(update=coord)})
    other = "mx2" if name == "mx1" else "mx1"
    peer_obs: NodeObservation | None = c.observe(other) if peer else None
    return plan(spec, name, own, peer_obs)


def _kinds(p: Plan) -> list[Kind]:
    return [a.kind for a in p.actions]


def test_the_converged_holder_and_candidate_have_nothing_to_do() -> None:
    c = _converged()
    assert _plan(c, "mx1").empty and _plan(c, "mx2").empty


def test_a_holder_without_renewals_demotes_itself_without_waiting_for_the_peer() -> None:
    c = _converged()
    p = _plan(c, "mx1", since_renewal_s=3.5)
    assert _kinds(p)[:2] == [Kind.STOP_SERVICE, Kind.STOP_SERVICE]
    assert Kind.PG_STOP in _kinds(p) and Kind.REMOVE_ADDRESSES in _kinds(p)
    assert not any(a.blocked for a in p.actions), [a.waiting_on for a in p.actions]
    assert any("demotes itself" in n for n in p.notes)
    assert _plan(c, "mx1", since_renewal_s=2.9).empty  # before demote_after_s: nothing


def test_the_candidate_acquires_once_the_key_is_gone_and_then_promotes_without_the_peer() -> None:
    c = _converged()
    p = _plan(c, "mx2", peer=False, leader=None, leader_epoch=None, leader_lease=None)
    assert p.actions[0].kind is Kind.COORD_ACQUIRE and not p.actions[0].blocked
    lease = c.world.nodes["mx2"].coord.lease
    held = _plan(c, "mx2", peer=False, leader="mx2", leader_epoch=2, leader_lease=lease, epoch=2, held_epoch=2,
                 held_lease=lease, held_revision=SPEC.digest, candidate=None, candidate_epoch=None)
    assert _kinds(held)[:2] == [Kind.WATCHDOG_ARM, Kind.DRBD_PRIMARY]
    promote = next(a for a in held.actions if a.kind is Kind.PG_PROMOTE)
    assert not promote.blocked and any("lease ended" in g.text for g in promote.guards)


def test_no_candidate_means_waiting_with_the_price_of_fenced_named() -> None:
    c = _converged()
    p = _plan(c, "mx2", peer=False, leader=None, leader_epoch=None, candidate=None, candidate_epoch=None)
    acquire = p.actions[-1]
    assert acquire.kind is Kind.COORD_ACQUIRE and acquire.blocked
    assert "fenced: [mx1]" in " ".join(acquire.waiting_on)


def test_an_etcd_that_went_back_is_not_decided_on() -> None:
    c = _converged()
    p = _plan(c, "mx2", peer=False, leader=None, leader_epoch=None, epoch=1, remembered_epoch=4)
    acquire = next(a for a in p.actions if a.kind is Kind.COORD_ACQUIRE)
    assert any("went back" in w for w in acquire.waiting_on)
    # and a holder whose etcd went back demotes itself
    assert any(a.kind is Kind.PG_STOP for a in _plan(c, "mx1", remembered_epoch=4).actions)


def test_a_new_revision_naming_the_peer_is_a_switchover_the_same_revision_is_not() -> None:
    c = _converged()
    new = make_spec("mx2", automatic=True, rev=7)
    lease = c.world.nodes["mx1"].coord.lease
    recorded = {"held_revision": new.digest, "held_lease": lease}
    assert not any(a.kind is Kind.COORD_RELEASE for a in _plan(c, "mx1", spec=new, **recorded).actions)
    p = _plan(c, "mx1", spec=new)
    assert Kind.COORD_RELEASE in _kinds(p)
    release = next(a for a in p.actions if a.kind is Kind.COORD_RELEASE)
    assert _kinds(p).index(Kind.PG_STOP) < _kinds(p).index(Kind.COORD_RELEASE)
    assert any("demoted first" in w for w in release.waiting_on)


def test_a_holder_that_cannot_read_etcd_promotes_nothing() -> None:
    c = SimCluster([SPEC])
    c.world.etcd.keeper_step(c.world, "mx1")  # type: ignore[union-attr]
    c.agent_step("mx1")  # acquires
    lease = c.world.nodes["mx1"].coord.lease
    cut = CoordObs(reachable=False, error="cut", held_epoch=1, held_lease=lease, lease=lease, since_renewal_s=0.5,
                   held_revision=SPEC.digest, remembered_epoch=1, watchdog_armed=True)
    p = _plan(c, "mx1", peer=True, **cut.model_dump())
    drbd = next(a for a in p.actions if a.kind is Kind.DRBD_PRIMARY)
    assert drbd.blocked and any("etcd cannot be read" in w for w in drbd.waiting_on)


def test_manual_mode_plans_exactly_as_before() -> None:
    """The same cluster with a manual spec: no coordination step at all."""
    c = SimCluster([make_spec("mx1")])
    for _ in range(20):
        for name in ("mx1", "mx2"):
            c.agent_step(name)
        c.replicate()
    assert all(not a.kind.value.startswith(("coord", "watchdog", "pg_sync")) for a in
               plan(c.specs[0], "mx1", c.observe("mx1"), c.observe("mx2")).actions)
    assert not any(x.startswith(("mx1: coord", "mx1: watchdog", "mx1: pg_sync")) for x in c.log)
