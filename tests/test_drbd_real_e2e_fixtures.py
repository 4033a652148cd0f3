"""The project's DRBD parsers on the real DRBD 8.4.11 output seen by the end-to-end tier.

Fixtures: tests/fixtures/drbd/real/e2e/ (its README.md says how and when each was captured,
by tests/test_e2e_lab.py with RECONCILER_E2E_CAPTURE set).  These are the states the agent
itself went through: Primary with the filesystem mounted, a Primary cut off while writing,
a takeover declared with `fenced:`, a split brain with one side Secondary, the operator's
recovery.  Each state is read through all three status sources, which must agree.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.execute.drbd import Outcome, classify
from reconciler.model import DrbdObs, DrbdRole
from reconciler.observe.drbd import CONNECTED_STATES, parse_events2, parse_proc_drbd, parse_sh_status
from reconciler.observe.drbd_kernel import kmsg_split_brain

E2E = Path(__file__).parent / "fixtures" / "drbd" / "real" / "e2e"
SOURCES = {"sh_status": parse_sh_status, "events2": parse_events2, "proc_drbd": parse_proc_drbd}


def real(name: str) -> str:
    return (E2E / name).read_text()


def obs(cs: str, role: DrbdRole, peer: DrbdRole) -> DrbdObs:
    pdsk = "UpToDate" if cs == "Connected" else "DUnknown"
    return DrbdObs(configured=True, role=role, peer_role=peer, connection=cs, disk="UpToDate", peer_disk=pdsk)


STATES = {
    "converged_mx1_primary.mx1": obs("Connected", "Primary", "Secondary"),
    "converged_mx1_primary.mx2": obs("Connected", "Secondary", "Primary"),
    "converged_mx2_primary.mx1": obs("Connected", "Secondary", "Primary"),
    "converged_mx2_primary.mx2": obs("Connected", "Primary", "Secondary"),
    "cut_mx2_primary.mx1": obs("WFConnection", "Secondary", "Unknown"),
    "cut_mx2_primary.mx2": obs("WFConnection", "Primary", "Unknown"),
    "takeover_while_cut.mx1": obs("WFConnection", "Primary", "Unknown"),
    "takeover_while_cut.mx2": obs("WFConnection", "Secondary", "Unknown"),
    "split_brain.mx1": obs("StandAlone", "Primary", "Unknown"),
    "split_brain.mx2": obs("StandAlone", "Secondary", "Unknown"),
    "recovered.mx1": obs("Connected", "Primary", "Secondary"),
    "recovered.mx2": obs("Connected", "Secondary", "Primary"),
}


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("state", sorted(STATES))
def test_every_source_reads_every_state(state: str, source: str) -> None:
    states = SOURCES[source](real(f"{state}.{source}.txt"))
    assert len(states) == 1
    s = states[0]
    assert (s.minor, s.resource) == (0, "" if source == "proc_drbd" else "r0")
    assert s.obs == STATES[state]


def test_the_captures_cover_every_state() -> None:
    assert {p.name.rsplit(".", 2)[0] for p in E2E.glob("*.*.sh_status.txt")} == set(STATES)


def test_held_open_demotion_is_retryable_minus_12() -> None:
    c = classify("secondary", 11, real("err_secondary_held_open.rc11.mx1.txt"))
    assert (c.outcome, c.code, c.text) == (Outcome.HELD_OPEN, -12, "Device is held open by someone")
    assert c.outcome.retryable
    line = real("agent_log_held_open.mx1.txt")
    assert "(-12) Device is held open by someone" in line and "fuser -vm /dev/drbd0" in line


def test_the_operators_recovery_commands_ran() -> None:
    # the first reported step fails harmlessly on a victim that is already StandAlone
    c = classify("disconnect", 10, real("op_disconnect_r0.rc10.mx2.txt"))
    assert (c.code, c.kernel_info) == (162, ("unknown connection",))
    for name in ("op_secondary_r0.rc0.mx2.txt", "op_connect_discard_my_data_r0.rc0.mx2.txt", "op_connect_r0.rc0.mx1.txt"):
        assert (E2E / name).exists()


@pytest.mark.parametrize("node", ["mx1", "mx2"])
def test_split_brain_in_the_kernel_log_then_solved(node: str) -> None:
    during = real(f"kmsg_split_brain.{node}.txt").splitlines()
    after = real(f"kmsg_split_brain_resolved.{node}.txt").splitlines()
    assert kmsg_split_brain(during, 0) is True and kmsg_split_brain(during, 1) is False
    assert kmsg_split_brain(after, 0) is False
    assert after[: len(during)] == during  # the same ring buffer, later
    assert any("Split-Brain detected, manually solved" in ln for ln in after[len(during):])


def test_a_cut_primary_is_no_split_brain() -> None:
    lines = real("dmesg_cut.mx2.txt").splitlines()
    assert any("PingAck did not arrive in time" in ln for ln in lines)
    assert any("new current UUID" in ln for ln in lines)  # the Primary's writes after the cut fork the data
    assert kmsg_split_brain(lines, 0) is False


def test_the_split_brain_is_not_connected() -> None:
    for node in ("mx1", "mx2"):
        (s,) = parse_sh_status(real(f"split_brain.{node}.sh_status.txt"))
        assert s.obs.connection not in CONNECTED_STATES  # read_drbd reports split_brain only then
