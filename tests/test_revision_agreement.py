"""The planner's revision-agreement guard: a role change waits while the two agents apply
specs that disagree on the roles, names both revisions, and goes ahead once they agree."""

from __future__ import annotations

from reconciler.model import NodeObservation
from reconciler.plan.actions import Kind
from reconciler.plan.agreement import spec_roles
from reconciler.plan.planner import plan
from tests.test_planner_cases import SPEC, snap, spec_with

OLD, NEW = "1" * 40, "2" * 40
TO_MX2 = spec_with(**{"primary: mx1 ": "primary: mx2 "})


def applying(obs: NodeObservation, spec, revision: str | None) -> NodeObservation:
    """`obs` as served by an agent that applies `spec` at `revision`."""
    return obs.model_copy(update={"spec_digest": spec.digest, "revision": revision, "spec_roles": spec_roles(spec.model)})


def same_revision_guard(a):
    return next((g for g in a.guards if g.name == "same_revision"), None)


def test_demotion_waits_while_the_peer_applies_the_old_roles_and_names_both_revisions():
    own = applying(snap("converged", "mx1"), TO_MX2, NEW)
    peer = applying(snap("converged", "mx2"), SPEC, OLD)
    p = plan(TO_MX2, "mx1", own, peer)
    first = p.next_action
    assert first.kind == Kind.STOP_SERVICE and first.blocked
    text = "; ".join(first.waiting_on)
    assert "revisions disagree" in text and f"revision {NEW[:12]}" in text and f"revision {OLD[:12]}" in text
    assert "primary=mx2" in text and "primary=mx1" in text
    assert all(same_revision_guard(a) and not same_revision_guard(a).holds for a in p.actions if a.kind.row.changes_role)
    assert any("revisions disagree" in n for n in p.notes)


def test_promotion_waits_too():
    own = applying(snap("converged", "mx2"), TO_MX2, NEW)
    peer = applying(snap("converged", "mx1"), SPEC, OLD)
    p = plan(TO_MX2, "mx2", own, peer)
    promoting = [a for a in p.actions if a.kind in (Kind.DRBD_PRIMARY, Kind.PG_PROMOTE, Kind.ADD_ADDRESSES)]
    assert promoting and all(same_revision_guard(a) is not None and a.blocked for a in promoting)


def test_once_both_apply_the_same_roles_the_guard_is_gone():
    own = applying(snap("converged", "mx1"), TO_MX2, NEW)
    peer = applying(snap("converged", "mx2"), TO_MX2, NEW)
    p = plan(TO_MX2, "mx1", own, peer)
    assert p.next_action.kind == Kind.STOP_SERVICE and not p.next_action.blocked
    assert not any(same_revision_guard(a) for a in p.actions)


def test_the_node_whose_role_stays_is_not_held_back():
    # mx1 still applies the old spec (primary mx1) and is the primary: nothing to wait for.
    own = applying(snap("converged", "mx1"), SPEC, OLD)
    peer = applying(snap("converged", "mx2"), TO_MX2, NEW)
    assert plan(SPEC, "mx1", own, peer).empty


def test_unknown_roles_never_block():
    # The simulator, old agents and saved snapshots report no roles: other guards decide.
    own = applying(snap("converged", "mx1"), TO_MX2, NEW)
    peer = snap("converged", "mx2")
    assert peer.spec_roles is None
    p = plan(TO_MX2, "mx1", own, peer)
    assert not p.next_action.blocked and not any(same_revision_guard(a) for a in p.actions)


def test_different_revisions_with_the_same_roles_do_not_block():
    own = applying(snap("converged", "mx1"), TO_MX2, NEW)
    peer = applying(snap("converged", "mx2"), TO_MX2, "3" * 40)
    assert not plan(TO_MX2, "mx1", own, peer).next_action.blocked


def test_a_peer_declared_fenced_is_not_awaited():
    fenced = spec_with(**{"primary: mx1 ": "primary: mx2 ", "fenced: []": "fenced: [mx1]"})
    own = applying(snap("converged", "mx2"), fenced, NEW)
    peer = applying(snap("converged", "mx1"), SPEC, OLD)
    for a in plan(fenced, "mx2", own, peer).actions:
        g = same_revision_guard(a)
        assert g is None or (g.holds and "declared fenced" in g.text)


def test_spec_roles_text():
    assert spec_roles(SPEC.model) == "primary=mx1 fenced=none"
    both = spec_with(**{"fenced: []": "fenced: [mx2]"})
    assert spec_roles(both.model) == "primary=mx1 fenced=mx2"
