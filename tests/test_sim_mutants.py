"""The property tests can fail: each mutant removes one safety guard from the real planner,
and the simulated cluster must find a safety violation for it.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import precondition, rule, run_state_machine_as_test

from reconciler.plan import drbd as plan_drbd
from reconciler.plan import net as plan_net
from reconciler.plan import postgres as plan_pg
from reconciler.plan.actions import Guard
from tests.test_sim_properties import Cluster

# Examples needed to find each mutant, 15 unseeded runs each (see the module's history):
# peer check 6-594, DRBD guards 39-881, addresses 6-1,828.  The budget is about 3x the
# worst of those; derandomize makes every run search the same examples, so the outcome
# is reproducible (a change that makes the search miss fails every time, not now and then).
# No shrinking: the violation is all this test needs, not its smallest form.
MUTANT_SETTINGS = settings(max_examples=6000, stateful_step_count=40, deadline=None,
                           suppress_health_check=list(HealthCheck), database=None,
                           derandomize=True, phases=[Phase.generate], report_multiple_bugs=False)


def _off(self) -> bool:
    return False


class SafetyOnly(Cluster):
    """The same machine without the liveness check (a mutant must break *safety*) and
    without the fault rules that only dilute the search for a missing guard."""

    def teardown(self) -> None:
        pass

    @precondition(_off)
    @rule()
    def drift_service_stopped(self) -> None: ...

    @precondition(_off)
    @rule()
    def drift_ip_deleted(self) -> None: ...

    @precondition(_off)
    @rule()
    def drift_foreign_ip(self) -> None: ...

    @precondition(_off)
    @rule()
    def power_cycle(self) -> None: ...

    @precondition(_off)
    @rule()
    def pg_crash(self) -> None: ...

    @precondition(_off)
    @rule()
    def agent_killed_mid_action(self) -> None: ...

    @precondition(_off)
    @rule()
    def agent_restart(self) -> None: ...  # only undoes the two faults above

    @precondition(_off)
    @rule()
    def fence(self) -> None: ...  # the fenced node stays off here: a dead end for the search


def _no_pg_peer_guard(ctx, mine, own):
    return []


def _no_drbd_guards(ctx, r, o):
    return (Guard("local_uptodate", o.disk == "UpToDate", "x"),)


def _peer_always_free(ctx, items):
    return Guard("peer_holds_none", True, "mutant")


MUTANTS = {
    "promotion without the peer check": (plan_pg, "_peer_position_guards", _no_pg_peer_guard),
    "DRBD promotion without peer/connection guards": (plan_drbd, "_promote_guards", _no_drbd_guards),
    "adding addresses the peer still holds": (plan_net, "_peer_free_guard", _peer_always_free),
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_is_caught(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module, attr, fake = MUTANTS[name]
    monkeypatch.setattr(module, attr, fake)
    with pytest.raises(AssertionError, match="safety violated"):
        run_state_machine_as_test(SafetyOnly, settings=MUTANT_SETTINGS)
