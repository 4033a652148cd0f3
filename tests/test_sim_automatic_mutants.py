"""The automatic-failover property tests can fail: each mutant removes one guard of
plan/leadership.py (or the waiver's limit in plan/context.py), and the simulated cluster with
etcd must find a safety violation for it.

Examples needed to find each mutant (unseeded runs) are in MUTANT_BUDGET's comment; the budget is
about 3x the worst seen, derandomized so that every run searches the same examples.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RULE_MARKER, initialize, rule, run_state_machine_as_test

from reconciler.plan import leadership
from reconciler.plan.actions import Guard
from tests.test_sim_automatic import AutoCluster
from tests.test_sim_mutants import _disabled

MUTANT_SETTINGS = settings(max_examples=3_000, stateful_step_count=30, deadline=None,
                           suppress_health_check=list(HealthCheck), database=None,
                           derandomize=True, phases=[Phase.generate], report_multiple_bugs=False)


class AutoSafetyOnly(AutoCluster):
    """The automatic machine without the liveness check (a mutant must break *safety*) and without
    the faults that only dilute the search."""

    def teardown(self) -> None:
        pass

    unobservable = _disabled()
    observable_again = _disabled()
    agent_killed_mid_action = _disabled()
    etcd_snapshot = _disabled()
    etcd_restored_from_snapshot = _disabled()


def _focused(name: str, keep: set[str]) -> type[AutoCluster]:
    """AutoCluster with only the rules in `keep` (and without the liveness check): the search for a
    missing guard whose race is several specific steps long, undiluted."""
    attrs: dict[str, object] = {"teardown": lambda self: None}
    for attr in dir(AutoCluster):
        if hasattr(getattr(AutoCluster, attr), RULE_MARKER) and attr not in keep:
            attrs[attr] = _disabled()
    return type(name, (AutoCluster,), attrs)


class AutoRestore(_focused("AutoRestoreBase", {"etcd_snapshot", "etcd_restored_from_snapshot", "holder_fails",  # type: ignore[misc]
                                              "world_runs", "agent", "write"})):
    """etcd restored from an older snapshot (for the epoch guard), from a cluster that starts
    unsettled: snapshots from before the first epoch are part of the search."""

    @initialize(drbd=st.booleans())
    def start(self, drbd: bool) -> None:  # type: ignore[override]
        AutoCluster.start(self, drbd=drbd, base=False, settled=False)


class AutoPaused(_focused("AutoPausedBase", {"world_runs", "agent", "pg_crash", "write"})):  # type: ignore[misc]
    """A holder paused past its lease while cut off from the peer and the witness, its PostgreSQL
    crashing as it resumes (and the peer taking over meanwhile, or not)."""

    @rule(node=st.sampled_from(("mx1", "mx2")))
    def paused_while_cut_off(self, node: str) -> None:
        w = self.c.world
        w.link_up = False
        w.etcd.wit_cut.add(node)  # type: ignore[union-attr]
        self.c.settle()
        self.c.pause(node, 12.0)


class TimelyAgents(AutoSafetyOnly):
    """`watchdog: off`, and agents that always get their turn: time moves only while both agents
    run (no machine paused, no agent hung or killed), so a holder that stops renewing must have
    demoted itself within demote_after_s + demotion_budget_s by its own doing."""

    watchdog = False
    time_passes = _disabled()
    node_paused = _disabled()
    agent = _disabled()
    agent_runs = _disabled()

    @rule(seconds=st.sampled_from((1, 3, 8, 15, 25)))
    def world_runs(self, seconds: int, agents: str = "both") -> None:
        AutoCluster.world_runs(self, seconds, "both")

    @rule(how=st.sampled_from(("cut", "keeper", "etcd")), seconds=st.sampled_from((3, 8, 15, 25)))
    def holder_fails(self, how: str, seconds: int) -> None:
        AutoCluster.holder_fails(self, how, seconds)


# ---- the mutants --------------------------------------------------------------------------------


def _holds_without_renewal(spec, c, seen=0):  # type: ignore[no-untyped-def]
    return c.held_epoch is not None and c.lease is not None and c.lease == c.held_lease


def _publish_while_streaming(spec, me, own):  # type: ignore[no-untyped-def]
    """Publishes the peer as soon as it streams, synchronous or not."""
    before, after = ORIGINAL_HOLDER_STEPS(spec, me, own)
    pg = own.postgres
    peer = spec.peer_of(me)
    c = own.coord
    if pg is not None and peer in pg.streaming_standbys and not (c.candidate == peer and c.candidate_epoch == c.held_epoch):
        after = [a for a in after if a.kind.value != "coord_publish"]
        from reconciler.plan.actions import Action, Kind

        after.insert(0, Action(Kind.COORD_PUBLISH, peer, "mutant"))
    return before, after


def _relax_before_withdrawing(spec, me, own):  # type: ignore[no-untyped-def]
    before, after = ORIGINAL_HOLDER_STEPS(spec, me, own)
    return before, [a if a.kind.value != "pg_sync_off" else a.__class__(a.kind, a.target, a.reason) for a in after
                    if a.kind.value != "coord_withdraw"]


def _always_eligible(spec, me, c):  # type: ignore[no-untyped-def]
    return True, "mutant"


def _never_seen_more(c, peer):  # type: ignore[no-untyped-def]
    return 0


def _switch_without_new_revision(obs, digest):  # type: ignore[no-untyped-def]
    return "never the same revision"


def _lease_end_consents_to_discard(self):  # type: ignore[no-untyped-def]
    return self.me in self.spec.model.fenced or self.role.self_fence or self.own.coord is not None


def _promote_unconfirmed(own, actions):  # type: ignore[no-untyped-def]
    return actions


ORIGINAL_HOLDER_STEPS = leadership.holder_steps
CTX_ME_FENCED = "me_fenced"

MUTANTS = {
    "no self-demotion without renewals": ([(leadership, "holds", _holds_without_renewal)], TimelyAgents),
    "candidate published before it is synchronous": ([(leadership, "holder_steps", _publish_while_streaming)],
                                                      AutoSafetyOnly),
    "synchronous replication relaxed with the candidate published": (
        [(leadership, "holder_steps", _relax_before_withdrawing)], AutoSafetyOnly),
    "acquiring without being the candidate": ([(leadership, "_eligible", _always_eligible)], AutoSafetyOnly),
    "deciding on an etcd that went back": ([(leadership, "seen_epoch", _never_seen_more)], AutoRestore),
    "fail-back without a new revision": ([(leadership, "revision_of", _switch_without_new_revision)],
                                         AutoSafetyOnly),
    "promotion not confirmed by etcd": ([(leadership, "confirm_promotions", _promote_unconfirmed)], AutoPaused),
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_automatic_mutant_is_caught(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    patches, machine = MUTANTS[name]
    for module, attr, fake in patches:
        monkeypatch.setattr(module, attr, fake)
    with pytest.raises(AssertionError, match="safety violated"):
        run_state_machine_as_test(machine, settings=MUTANT_SETTINGS)


def test_the_discard_waiver_mutant_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lost lease (or any automatic state) taken for the operator's consent to discard: pg_rewind
    runs without `fenced:`."""
    from reconciler.plan import context

    monkeypatch.setattr(context.Ctx, CTX_ME_FENCED, property(_lease_end_consents_to_discard))
    with pytest.raises(AssertionError, match="safety violated"):
        run_state_machine_as_test(AutoSafetyOnly, settings=MUTANT_SETTINGS)


def test_guard_names_are_the_plan_s() -> None:
    """The mutants patch what the planner calls: a rename would make them vacuous."""
    for name in ("holds", "holder_steps", "_eligible", "seen_epoch", "revision_of", "confirm_promotions"):
        assert callable(getattr(leadership, name)), name
    assert isinstance(Guard("x", True, "y"), Guard)
