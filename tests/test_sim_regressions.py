"""Failing sequences found by unseeded property searches, replayed step by step.

The Primary-only services on both nodes: in a cluster without DRBD and PostgreSQL, mx2 started greenarrow while mx1 still
ran smtp, because nothing but "the peer holds none of *these* addresses" stood in the way:
the same commit switched the Primary and changed the address list, or drift had taken
mx1's address.  The first sequence is the shortest one of the search that found it
(20,000 examples, fresh seed); the other three are the three distinct failures a second
unseeded search of 20,000 found on the same code (6ed67fa) in 921 s.  Each must fail
without `plan/handover.py` (see test_sim_mutants for the search that finds it).
"""

from __future__ import annotations

import pytest

from tests.test_sim_properties import Cluster

TEN = {"10.9.0.10/24"}  # what `edit_spec(ips=set())` meant when these were found

SEQUENCES = {
    "switch and new address list in one commit": [
        ("agent", {"node": "mx1"}), ("agent", {"node": "mx1"}), ("agent", {"node": "mx1"}),
        ("edit_spec", {"ips": {"10.9.1.5/32"}, "primary": "mx2", "reach": "both"}),
        *[("agent", {"node": "mx2"})] * 6,
    ],
    "address drifted away after a crash, then switch (found while converging)": [
        ("pg_crash", {"node": "mx1"}), *[("write", {})] * 7, ("agent", {"node": "mx1"}),
        ("agent_runs", {"node": "mx1", "steps": 2}),
        ("edit_spec", {"ips": TEN, "primary": "mx2", "reach": "both"}),
        ("drift_ip_deleted", {"i": 0, "node": "mx1"}), ("agent", {"node": "mx2"}),
    ],
    "address drifted away, then switch": [
        ("agent", {"node": "mx1"}), ("write", {}), ("write", {}), ("agent_runs", {"node": "mx1", "steps": 2}),
        ("drift_ip_deleted", {"i": 0, "node": "mx1"}),
        ("edit_spec", {"ips": TEN, "primary": "mx2", "reach": "both"}),
        ("agent", {"node": "mx2"}), ("agent", {"node": "mx2"}),
    ],
    "address drifted away, then switch (agent steps in a run)": [
        ("write", {}), ("write", {}), ("write", {}), ("agent_runs", {"node": "mx1", "steps": 2}),
        ("drift_ip_deleted", {"i": 0, "node": "mx1"}),
        ("edit_spec", {"ips": TEN, "primary": "mx2", "reach": "both"}),
        ("agent", {"node": "mx2"}), ("agent", {"node": "mx2"}),
    ],
}


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_no_service_on_both_nodes(name: str) -> None:
    m = Cluster()
    m.start(fresh=False, base=False, drbd=False, pg=False)
    m.safe()
    for rule, args in SEQUENCES[name]:
        getattr(m, rule)(**args)
        m.safe()
    mx1 = m.c.world.nodes["mx1"]
    assert any(mx1.services.values()) or any("stop_service" in line for line in m.c.log)  # mx1 was serving
    m.teardown()  # converges with mx2 Primary, checking safety at every step
    assert all(m.c.world.nodes["mx2"].services.values()) and not any(mx1.services.values())
