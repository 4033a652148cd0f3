"""Failing sequences of the automatic machine (tests/test_sim_automatic.py), replayed step by step."""

from __future__ import annotations

from tests.test_sim_automatic import AutoCluster, assert_automatic_converges


def test_renewals_of_a_lease_the_key_does_not_hang_on_feed_no_watchdog() -> None:
    """Found by the long profile (unseeded, ~10,500 examples, 51f219a): mx1, the holder, paused past
    its lease; its keeper then took a new lease; etcd was restored from a snapshot that brought the
    leader key back on mx1's *old* lease, with a fresh TTL; mx1's agent hung.  The simulator fed
    mx1's watchdog on the new lease's renewals, so the old lease expired on the server while mx1
    would still have been writable.  The real agent feeds the watchdog only on renewals of the
    lease its claim holds (agent/coordination.py `_feed`), and now so does the simulator: mx1 is
    reset, and nothing expires before its deadline."""
    m = AutoCluster()
    m.start(drbd=False, base=False, settled=True)
    m.time_passes(dt=0.5, renew=False)
    m.unobservable(node="mx1", part="net")
    m.etcd_snapshot()
    m.node_paused(dt=12.0, node="mx1")
    m.world_runs(agents="both", seconds=1)
    m.etcd_restored_from_snapshot(i=0)
    m.world_runs(agents="both", seconds=1)
    m.holder_fails(how="agent", seconds=25)
    m.safe()
    assert "mx1: watchdog reset" in m.c.log
    assert_automatic_converges(m)


def test_nobody_may_take_the_key_after_a_kill_mid_acquisition_and_a_restore_the_operator_picks() -> None:
    """Found by the long profile (unseeded, ~16,000 examples, 4ca35be): mx1 killed between its
    acquiring transaction and its claim file; restarted, it deleted the leader key naming it (an
    epoch it had no record of); then etcd was restored from a snapshot taken before that
    acquisition (its record of who acquired gone) and the operator put the epoch back.  Nobody
    holds the key, no candidate is published, neither node remembers holding the last epoch: both
    plans wait for the operator to declare the other fenced, and say so.  Nothing is promoted on a
    guess; the operator (here: the one with every acknowledged commit kept) decides."""
    m = AutoCluster()
    m.start(drbd=False, base=False, settled=False)
    m.etcd_snapshot()
    m.agent_killed_mid_action(limit=1, node="mx1")
    m.agent_restart(node="mx1")
    m.world_runs(agents="mx2", seconds=1)
    m.agent(node="mx1")
    m.etcd_restored_from_snapshot(i=0)
    m.safe()
    assert_automatic_converges(m)
    assert m.fenced, "converged without the operator's declaration"
