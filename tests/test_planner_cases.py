"""Planner cases on the example cluster: minimal plans, ownership, ordering, guard wording.

Inputs are the committed example snapshots (specs/examples/), changed field by field.
"""

from __future__ import annotations

import os

import pytest

from reconciler.address import parse as A
from reconciler.model import AddressObs, NodeObservation, PostgresObs, TimelineSwitch
from reconciler.plan.actions import Kind
from reconciler.plan.planner import PlanError, plan
from reconciler.spec.load import load_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX = os.path.join(ROOT, "specs", "examples")
SPEC = load_spec(os.path.join(ROOT, "specs", "cluster.example.yaml"))


def snap(scenario: str, node: str) -> NodeObservation:
    with open(os.path.join(EX, scenario, f"{node}.json")) as f:
        return NodeObservation.from_json(f.read())


def spec_with(**replace: str):
    text = open(os.path.join(ROOT, "specs", "cluster.example.yaml"), "rb").read()
    for old, new in replace.items():
        text = text.replace(old.encode(), new.encode())
    return load_spec("cluster.yaml", text)


def with_iface(obs: NodeObservation, name: str, **kw) -> NodeObservation:
    ifaces = dict(obs.interfaces)
    ifaces[name] = ifaces[name].model_copy(update=kw)
    return obs.model_copy(update={"interfaces": ifaces})


def kinds(p) -> list[Kind]:
    return [a.kind for a in p.actions]


def test_converged_pair_plans_nothing_on_either_node():
    assert plan(SPEC, "mx1", snap("converged", "mx1"), snap("converged", "mx2")).empty
    assert plan(SPEC, "mx2", snap("converged", "mx2"), snap("converged", "mx1")).empty


def test_one_missing_address_plans_exactly_one_add():
    own = snap("converged", "mx1")
    eth0 = own.interfaces["eth0"]
    gone = [a for a in eth0.addresses if a.address == A("192.0.2.33/24")]
    assert gone
    own = with_iface(own, "eth0", addresses=tuple(a for a in eth0.addresses if a.address != A("192.0.2.33/24")))
    p = plan(SPEC, "mx1", own, snap("converged", "mx2"))
    assert [(a.kind, a.items) for a in p.actions] == [(Kind.ADD_ADDRESSES, (A("192.0.2.33/24"),))]
    assert not p.actions[0].blocked


def test_one_address_removed_from_spec_plans_exactly_one_remove():
    spec = spec_with(**{"    - 2001:db8:25::10/64 ": "    # removed "})
    p = plan(spec, "mx1", snap("converged", "mx1"), snap("converged", "mx2"))
    assert [(a.kind, a.items) for a in p.actions] == [(Kind.REMOVE_ADDRESSES, (A("2001:db8:25::10/64"),))]


def test_untagged_address_is_never_removed_and_a_desired_one_is_adopted():
    own = snap("converged", "mx1")
    eth0 = own.interfaces["eth0"]
    addrs = [a.model_copy(update={"owned": False}) if a.address == A("192.0.2.10/24") else a for a in eth0.addresses]
    addrs.append(AddressObs(address="203.0.113.9/32", owned=False))
    own = with_iface(own, "eth0", addresses=tuple(addrs))
    p = plan(SPEC, "mx1", own, snap("converged", "mx2"))
    assert [(a.kind, a.items) for a in p.actions] == [(Kind.ADOPT_ADDRESSES, (A("192.0.2.10/24"),))]


def test_secondary_leaves_a_foreign_copy_alone_and_the_primary_waits_for_it():
    peer = with_iface(snap("converged", "mx2"), "eth0", addresses=(AddressObs(address="192.0.2.10/24", owned=False),))
    p2 = plan(SPEC, "mx2", peer, snap("converged", "mx1"))
    assert p2.empty and any("192.0.2.10/24" in n and "by hand" in n for n in p2.notes)
    own = snap("converged", "mx1")
    own = with_iface(own, "eth0", addresses=tuple(a for a in own.interfaces["eth0"].addresses if a.address != A("192.0.2.10/24")))
    p1 = plan(SPEC, "mx1", own, peer)
    assert p1.actions[0].waiting_on == ("peer mx2 still holds 192.0.2.10/24 on eth0",)


def test_removing_a_subnet_primary_with_survivors_sets_promote_secondaries_first():
    spec = spec_with(**{"    - 192.0.2.10/24 ": "    # removed "})
    own = snap("converged", "mx1")
    eth0 = own.interfaces["eth0"]
    assert not eth0.promote_secondaries
    first = eth0.addresses[0]
    assert first.address == A("192.0.2.10/24") and not first.secondary
    p = plan(spec, "mx1", own, snap("converged", "mx2"))
    assert kinds(p) == [Kind.SET_PROMOTE_SECONDARIES, Kind.REMOVE_ADDRESSES]
    p = plan(spec, "mx1", with_iface(own, "eth0", promote_secondaries=True), snap("converged", "mx2"))
    assert kinds(p) == [Kind.REMOVE_ADDRESSES]


def test_demotion_removes_secondaries_before_primaries_and_never_needs_promote():
    spec = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 "})
    p = plan(spec, "mx1", snap("converged", "mx1"), snap("converged", "mx2"))
    # PostgreSQL stops while its clients can still hear it; the DRBD Secondary the new Primary
    # needs comes next; the addresses go last, once the new Primary holds them
    assert kinds(p)[:6] == [Kind.STOP_SERVICE, Kind.PG_STOP, Kind.UNMOUNT, Kind.DRBD_SECONDARY,
                            Kind.REMOVE_ADDRESSES, Kind.REMOVE_ADDRESSES]
    v4 = [a for a in p.actions[4].items if a.version == 4]
    assert len(v4) == 41 and v4[-1] == A("192.0.2.10/24")  # the subnet's primary goes last
    assert "reset first" in p.actions[4].reason
    assert Kind.SET_PROMOTE_SECONDARIES not in kinds(p)


def _moved(obs: NodeObservation, frm: NodeObservation) -> NodeObservation:
    """`obs` holding the addresses `frm` holds (tags and all)."""
    return obs.model_copy(update={"interfaces": frm.interfaces})


def _stopped(obs: NodeObservation) -> NodeObservation:
    services = {k: v.model_copy(update={"active": False}) for k, v in obs.services.items()}
    return obs.model_copy(update={"postgres": PostgresObs(running=False, cluster_state="shut down"),
                                  "services": services})


def test_old_primary_keeps_the_addresses_until_the_new_one_holds_them():
    spec = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 "})
    # mx1 has stopped its services and PostgreSQL (the shutdown checkpoint has reached mx2),
    # unmounted and demoted its DRBD resources: mx2 can promote and take the addresses
    old, new = _stopped(snap("converged", "mx1")), snap("converged", "mx2")
    ppg = old.postgres.model_copy(update={"checkpoint_lsn": "0/3039128", "checkpoint_end_lsn": "0/30391A0",
                                          "checkpoint_timeline": 1,
                                          "system_identifier": new.postgres.system_identifier})
    npg = new.postgres.model_copy(update={"receive_lsn": "0/30391A0", "replay_lsn": "0/30391A0", "timeline": 1})
    primary_here = old.model_copy(update={"postgres": ppg})
    demoted = {k: v.model_copy(update={"role": "Secondary", "peer_role": "Secondary"}) for k, v in old.drbd.items()}
    old = primary_here.model_copy(update={"drbd": demoted, "mounts": {}})
    new = new.model_copy(update={"postgres": npg, "drbd": {k: v.model_copy(update={"peer_role": "Secondary"})
                                                            for k, v in new.drbd.items()}})
    assert not any(a.blocked for a in plan(spec, "mx2", new, old).actions[:2])  # mx2 is on its way
    remove = [a for a in plan(spec, "mx1", old, new).actions if a.kind is Kind.REMOVE_ADDRESSES]
    assert remove and all(a.blocked for a in remove)
    assert remove[0].waiting_on[0].startswith("kept here, refusing connections, until the Primary mx2 holds ")
    # the new Primary holds them: they go
    remove = [a for a in plan(spec, "mx1", old, _moved(new, old)).actions if a.kind is Kind.REMOVE_ADDRESSES]
    assert remove and not any(a.blocked for a in remove)
    # mx2's observation taken a moment before the shutdown ended (the checkpoint still in flight
    # to it, streaming from here): it is on its way all the same
    lagging = new.model_copy(update={"postgres": npg.model_copy(update={"receive_lsn": "0/3039128",
                                                                        "replay_lsn": "0/3039128"})})
    assert lagging.postgres.wal_receiver.status == "streaming"
    assert all(a.blocked for a in plan(spec, "mx1", old, lagging).actions if a.kind is Kind.REMOVE_ADDRESSES)
    # the same lag without a stream from here is a promotion that may never come: they go
    cut = lagging.model_copy(update={"postgres": lagging.postgres.model_copy(update={"wal_receiver": None})})
    assert not any(a.blocked for a in plan(spec, "mx1", old, cut).actions if a.kind is Kind.REMOVE_ADDRESSES)
    # an unreachable peer holds nothing up
    assert not any(a.blocked for a in plan(spec, "mx1", old, None).actions if a.kind is Kind.REMOVE_ADDRESSES)
    # nor does a Primary that needs more from this node first: its DRBD Secondary, or a source to clone
    assert not any(a.blocked for a in plan(spec, "mx1", primary_here, new).actions if a.kind is Kind.REMOVE_ADDRESSES)
    to_clone = new.model_copy(update={"postgres": PostgresObs(running=False, data_dir_empty=True)})
    assert not any(a.blocked for a in plan(spec, "mx1", old, to_clone).actions if a.kind is Kind.REMOVE_ADDRESSES)


def test_new_primary_adds_the_addresses_the_old_one_holds_only_while_it_serves_nothing():
    spec = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 "})
    old, promoted = snap("converged", "mx1"), snap("converged", "mx1").model_copy(update={"node": "mx2"})
    unaddressed = promoted.model_copy(update={"interfaces": snap("converged", "mx2").interfaces})
    add = next(a for a in plan(spec, "mx2", unaddressed, old).actions if a.kind is Kind.ADD_ADDRESSES)
    assert add.blocked  # the old Primary's PostgreSQL and services still run
    add = next(a for a in plan(spec, "mx2", unaddressed, _stopped(old)).actions if a.kind is Kind.ADD_ADDRESSES)
    assert not add.blocked
    assert any("but runs none of the services and its PostgreSQL is stopped" in g.text for g in add.guards)
    # one service still running there: no overlap
    running = _stopped(old)
    running = running.model_copy(update={"services": {**running.services, next(iter(running.services)):
                                                       next(iter(old.services.values()))}})
    assert next(a for a in plan(spec, "mx2", unaddressed, running).actions if a.kind is Kind.ADD_ADDRESSES).blocked


def test_promotion_waits_for_the_shutdown_checkpoint_with_the_exact_positions():
    own = snap("mid-switchover", "mx2")
    peer = snap("mid-switchover", "mx1")
    pg = own.postgres.model_copy(update={"receive_lsn": "0/3039128", "replay_lsn": "0/3039128", "timeline": 1})
    ppg = PostgresObs(running=False, cluster_state="shut down", checkpoint_lsn="0/3039128",
                      checkpoint_end_lsn="0/30391A0", checkpoint_timeline=1, system_identifier=pg.system_identifier)
    spec = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 "})
    p = plan(spec, "mx2", own.model_copy(update={"postgres": pg}), peer.model_copy(update={"postgres": ppg}))
    promote = next(a for a in p.actions if a.kind is Kind.PG_PROMOTE)
    assert promote.waiting_on == ("standby has received 0/3039128, old primary's shutdown checkpoint ends at 0/30391A0",)
    pg = pg.model_copy(update={"receive_lsn": "0/30391A0"})
    p = plan(spec, "mx2", own.model_copy(update={"postgres": pg}), peer.model_copy(update={"postgres": ppg}))
    assert not next(a for a in p.actions if a.kind is Kind.PG_PROMOTE).blocked


def test_unreachable_peer_blocks_promotion_unless_fenced():
    own = snap("mid-switchover", "mx2")
    # the peer is gone: its agent does not answer and DRBD lost the connection
    r0 = own.drbd["r0"].model_copy(update={"connection": "WFConnection", "peer_role": "Unknown",
                                           "peer_disk": "DUnknown"})
    own = own.model_copy(update={"drbd": {"r0": r0}})
    spec = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 "})
    p = plan(spec, "mx2", own, None)
    assert p.actions[0].blocked and "fenced: [mx1]" in p.actions[0].waiting_on[0]
    fenced = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 ", "\nfenced: []": "\nfenced: [mx1]"})
    p = plan(fenced, "mx2", own, None)
    assert not any(a.blocked for a in p.actions)


def _former_primary(checkpoint_end: str) -> PostgresObs:
    return PostgresObs(running=False, cluster_state="shut down", checkpoint_lsn="0/3039128",
                       checkpoint_end_lsn=checkpoint_end, checkpoint_timeline=1, rewind_possible=True)


def _new_primary(switchpoint: str) -> PostgresObs:
    return PostgresObs(running=True, in_recovery=False, timeline=2, control_timeline=2, current_lsn="0/4000000",
                       history=(TimelineSwitch(parent=1, switchpoint=switchpoint),))


def test_clean_former_primary_rejoins_without_rewind_when_switchpoint_matches():
    own = snap("converged", "mx2").model_copy(update={"node": "mx1", "postgres": _former_primary("0/30391A0")})
    peer = snap("converged", "mx1").model_copy(update={"node": "mx2", "postgres": _new_primary("0/30391A0")})
    spec = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 "})
    p = plan(spec, "mx1", own, peer)
    assert kinds(p)[-1] is Kind.PG_START_STANDBY and not p.actions[-1].blocked


def test_diverged_former_primary_is_rewound_only_when_declared_fenced():
    own = snap("converged", "mx2").model_copy(update={"node": "mx1", "postgres": _former_primary("0/3100000")})
    peer = snap("converged", "mx1").model_copy(update={"node": "mx2", "postgres": _new_primary("0/30391A0")})
    spec = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 "})
    a = plan(spec, "mx1", own, peer).actions[-1]
    assert a.kind is Kind.PG_REWIND and a.blocked and "0/30391A0" in a.loses
    spec = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 ", "\nfenced: []": "\nfenced: [mx1]"})
    a = plan(spec, "mx1", own, peer).actions[-1]
    assert a.kind is Kind.PG_REWIND and not a.blocked


def test_two_primaries_on_one_timeline_number_need_a_reclone_not_a_rewind():
    # mx1 shut down cleanly as a primary on timeline 2; mx2 is a primary on (another) timeline 2
    mine = _former_primary("0/30391A0").model_copy(update={"checkpoint_timeline": 2})
    own = snap("converged", "mx2").model_copy(update={"node": "mx1", "postgres": mine})
    peer = snap("converged", "mx1").model_copy(update={"node": "mx2", "postgres": _new_primary("0/30391A0")})
    fenced = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 ", "\nfenced: []": "\nfenced: [mx1]"})
    a = plan(fenced, "mx1", own, peer).actions[-1]
    assert a.kind is Kind.PG_CLONE and a.blocked and "needs re-clone" in a.waiting_on[0]
    assert "Move /var/lib/postgresql/15/main aside" in a.waiting_on[0] or "aside" in a.waiting_on[0]
    # not fenced: the operator decides, as before
    spec = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 "})
    a = plan(spec, "mx1", own, peer).actions[-1]
    assert a.kind is Kind.PG_START_STANDBY and a.blocked and "both were primary on timeline 2" in a.waiting_on[0]


def test_a_fenced_former_primary_waits_for_a_running_primary_before_rejoining():
    own = snap("converged", "mx2").model_copy(update={"node": "mx1", "postgres": _former_primary("0/30391A0")})
    stopped = PostgresObs(running=False, cluster_state="shut down in recovery", checkpoint_lsn="0/3039128",
                          checkpoint_timeline=1)
    peer = snap("converged", "mx1").model_copy(update={"node": "mx2", "postgres": stopped})
    fenced = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 ", "\nfenced: []": "\nfenced: [mx1]"})
    a = plan(fenced, "mx1", own, peer).actions[-1]
    assert a.kind is Kind.PG_START_STANDBY and a.blocked and "declared fenced" in a.waiting_on[0]
    spec = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 "})  # not fenced: it may serve mx2 its WAL
    assert not plan(spec, "mx1", own, peer).actions[-1].blocked


def test_crashed_former_primary_is_recovered_never_started_as_a_standby():
    crashed = PostgresObs(running=False, cluster_state="in production", checkpoint_lsn="0/3000028", checkpoint_timeline=1)
    own = snap("converged", "mx2").model_copy(update={"node": "mx1", "postgres": crashed})
    peer = snap("converged", "mx1").model_copy(update={"node": "mx2", "postgres": _new_primary("0/30391A0")})
    spec = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 "})
    assert kinds(plan(spec, "mx1", own, peer))[-1] is Kind.PG_CRASH_RECOVER


def test_wrong_inputs_are_plan_errors():
    with pytest.raises(PlanError):
        plan(SPEC, "mx3", snap("converged", "mx1"), None)
    with pytest.raises(PlanError):
        plan(SPEC, "mx1", snap("converged", "mx2"), None)


def test_every_action_kind_has_a_simulated_effect_and_a_title():
    from tests.sim import act

    src = open(act.__file__).read()
    for k in Kind:
        assert f"Kind.{k.name}:" in src, f"the simulator does not model {k}"
        assert k.row.title and k.row.symbol in "+-~?"


# ---- a partial observation is never planned from ------------------------------------------


def test_a_part_that_could_not_be_observed_blocks_the_whole_plan():
    # mx1 must demote; its services could not be read (observe.node leaves them empty and
    # says why).  Without the rule, "no service seen" reads as "every service stopped" and
    # the demotion would go on to stop PostgreSQL and drop the addresses under a live MTA.
    spec = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 "})
    own = snap("converged", "mx1").model_copy(update={"services": {}, "errors": ("services: systemctl timed out",)})
    p = plan(spec, "mx1", own, snap("converged", "mx2"))
    assert [(a.kind, a.target, a.blocked) for a in p.actions] == [(Kind.AWAIT, "services", True)]
    assert p.actions[0].waiting_on == ("the services on mx1 could not be observed: systemctl timed out",)
    # the same node, observed fully, demotes: the rule is what held it
    assert kinds(plan(spec, "mx1", snap("converged", "mx1"), snap("converged", "mx2")))[0] is Kind.STOP_SERVICE


def test_each_unobserved_part_gets_its_own_wait_and_nothing_else_is_planned():
    own = snap("converged", "mx2").model_copy(update={
        "interfaces": {}, "drbd": {}, "postgres": None,
        "errors": ("net: netlink dump failed", "drbd: drbdsetup timed out", "postgres: pg_controldata failed")})
    p = plan(SPEC, "mx2", own, snap("converged", "mx1"))
    assert [(a.kind, a.target) for a in p.actions] == [(Kind.AWAIT, "addresses"), (Kind.AWAIT, "drbd"),
                                                       (Kind.AWAIT, "postgres")]
    assert all(a.blocked for a in p.actions) and not p.empty
    from reconciler.plan.render import counts, human

    assert counts(p) == {"add": 0, "change": 0, "remove": 0, "blocked": 3}
    text = human(p, "mail", "mx1")
    assert "? postgres: wait until its state can be read" in text and "pg_controldata failed" in text


def test_a_missing_drbd_module_is_not_an_unknown_state():
    # DrbdModuleMissing reports every resource (not configured) with its diagnosis: the plan
    # goes on to `drbdadm up`, whose failure carries the diagnosis to the operator.
    own = snap("converged", "mx2")
    r0 = own.drbd["r0"].model_copy(update={"configured": False, "role": "Unknown", "connection": "StandAlone"})
    own = own.model_copy(update={"drbd": {**own.drbd, "r0": r0}, "errors": ("drbd: the drbd kernel module is missing",)})
    assert Kind.AWAIT not in kinds(plan(SPEC, "mx2", own, snap("converged", "mx1")))


@pytest.mark.parametrize("node", ["mx1", "mx2"])
def test_a_postgres_that_answers_no_query_is_waited_for_not_guessed(node):
    # Running, but starting up or shutting down: pg_is_in_recovery() cannot be asked.  It is
    # neither promoted (mx2 as the new primary) nor taken for a settled standby (mx1).
    other = "mx1" if node == "mx2" else "mx2"
    spec = spec_with(**{"\nprimary: mx1 ": f"\nprimary: {other} "})
    own = snap("converged", node)
    starting = own.postgres.model_copy(update={"in_recovery": None, "timeline": None, "receive_lsn": None,
                                               "replay_lsn": None, "current_lsn": None, "wal_receiver": None,
                                               "cluster_state": "in archive recovery"})
    peer = snap("converged", other)
    if node == "mx2":  # the old primary has shut down cleanly: promotion would otherwise go ahead
        peer = peer.model_copy(update={"postgres": PostgresObs(
            running=False, cluster_state="shut down", checkpoint_lsn="0/3039128", checkpoint_end_lsn="0/30391A0",
            checkpoint_timeline=1, system_identifier=own.postgres.system_identifier)})
    p = plan(spec, node, own.model_copy(update={"postgres": starting}), peer)
    pg = [a for a in p.actions if a.target == "postgres"]
    assert [a.kind for a in pg] == [Kind.AWAIT] and pg[0].blocked
    assert "not accepting connections yet" in pg[0].waiting_on[0] and "in archive recovery" in pg[0].waiting_on[0]
    assert Kind.PG_PROMOTE not in kinds(p)


def test_the_new_primary_waits_while_the_peers_postgres_answers_no_query():
    spec = spec_with(**{"\nprimary: mx1 ": "\nprimary: mx2 "})
    peer = snap("converged", "mx1")
    ppg = peer.postgres.model_copy(update={"in_recovery": None, "timeline": None, "current_lsn": None,
                                           "cluster_state": "in production"})
    p = plan(spec, "mx2", snap("converged", "mx2"), peer.model_copy(update={"postgres": ppg}))
    promote = next(a for a in p.actions if a.kind is Kind.PG_PROMOTE)
    assert promote.waiting_on == ("peer mx1 PostgreSQL is starting up or shutting down: "
                                  "its position is read once it accepts connections",)
