"""The project's DRBD parsers and classifier on real DRBD 8.4.11 output from the VM lab.

Fixtures: tests/fixtures/drbd/real/ (README.md there says how each was captured, by
tests/drbd_capture.py).  Each state is checked through all three status sources, which
must agree; errors through `classify`; split brain through `kmsg_split_brain`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.execute.drbd import Outcome, classify
from reconciler.model import DrbdObs, DrbdRole
from reconciler.observe.drbd import parse_events2, parse_proc_drbd, parse_sh_status
from reconciler.observe.drbd_kernel import kmsg_split_brain, parse_version

REAL = Path(__file__).parent / "fixtures" / "drbd" / "real"
SOURCES = {"sh_status": parse_sh_status, "events2": parse_events2, "proc_drbd": parse_proc_drbd}


def real(name: str) -> str:
    return (REAL / name).read_text()


def obs(cs: str, role: DrbdRole, peer: DrbdRole, pdsk: str = "DUnknown", disk: str = "UpToDate") -> DrbdObs:
    return DrbdObs(configured=True, role=role, peer_role=peer, connection=cs, disk=disk, peer_disk=pdsk)


STATES = {
    "connected_secondary.mx1": obs("Connected", "Secondary", "Secondary", "UpToDate"),
    "connected_secondary.mx2": obs("Connected", "Secondary", "Secondary", "UpToDate"),
    "primary_secondary.mx1": obs("Connected", "Primary", "Secondary", "UpToDate"),
    "primary_secondary.mx2": obs("Connected", "Secondary", "Primary", "UpToDate"),
    "standalone_secondary.mx2": obs("StandAlone", "Secondary", "Unknown"),
    "wfconnection_primary_peer_disconnected.mx1": obs("WFConnection", "Primary", "Unknown"),
    "wfconnection_primary_cut.mx1": obs("WFConnection", "Primary", "Unknown"),
    "wfconnection_secondary_cut.mx2": obs("WFConnection", "Secondary", "Unknown"),
    "wfconnection_primary_both.mx2": obs("WFConnection", "Primary", "Unknown"),
    "split_brain.mx1": obs("StandAlone", "Primary", "Unknown"),
    "split_brain.mx2": obs("StandAlone", "Primary", "Unknown"),
}


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("state", sorted(STATES))
def test_every_source_reads_every_state(state: str, source: str) -> None:
    states = SOURCES[source](real(f"{state}.{source}.txt"))
    assert len(states) == 1
    s = states[0]
    assert s.minor == 0
    assert s.resource == ("" if source == "proc_drbd" else "r0")
    assert s.volume == (None if source == "proc_drbd" else 0)
    assert s.obs == STATES[state]


def test_the_captures_cover_every_state() -> None:
    captured = {p.name.rsplit(".", 2)[0] for p in REAL.glob("*.*.sh_status.txt")}
    assert captured == set(STATES)


def test_nothing_up() -> None:
    assert real("sh_status.not_up.mx1.txt") == ""  # drbdsetup-84 exits 19 and prints nothing
    assert parse_events2(real("events2.not_up.mx1.txt")) == []
    assert real("events2.not_up.mx1.txt") == "exists -\n"
    assert parse_proc_drbd(real("proc_drbd.no_minors.mx1.txt")) == []


def test_versions() -> None:
    assert parse_version(real("drbdadm_version.loaded.mx1.txt")) == (8, 4, 11)
    assert parse_version(real("drbdadm_version.not_loaded.mx1.txt")) is None  # 0x000000 though installed
    assert parse_version(real("connected_secondary.mx1.proc_drbd.txt").splitlines()[0]) == (8, 4, 11)


ERRORS = [
    ("err_secondary_held_open.rc11.mx1.txt", "secondary", 11, Outcome.HELD_OPEN, -12,
     "Device is held open by someone", ()),
    ("err_down_held_open.rc11.mx1.txt", "down", 11, Outcome.HELD_OPEN, -12,
     "Device is held open by someone", ("failed to demote",)),
    ("err_primary_two_primaries.rc11.mx2.txt", "primary", 11, Outcome.TWO_PRIMARIES, -1,
     "Multiple primaries not allowed by config", ()),
    ("err_primary_peer_not_outdated.rc11.mx2.txt", "primary", 11, Outcome.PEER_NOT_OUTDATED, -7,
     "Refusing to be Primary while peer is not outdated", ()),
]


@pytest.mark.parametrize("name,verb,rc,outcome,code,text,info", ERRORS)
def test_classify_real_errors(name: str, verb: str, rc: int, outcome: Outcome, code: int, text: str,
                              info: tuple[str, ...]) -> None:
    c = classify(verb, rc, real(name))
    assert (c.outcome, c.code, c.text, c.kernel_info) == (outcome, code, text, info)
    assert c.outcome.retryable == (outcome is Outcome.HELD_OPEN)


def test_disconnect_when_standalone_is_a_kernel_failure_162() -> None:
    # drbd.md §1.6 derived this from the source ("UNVERIFIED"); this is the real thing.
    text = real("err_disconnect_standalone.mx2.txt")
    assert text.startswith("??: Failure: (162) Invalid configuration request\n")
    c = classify("disconnect", 10, text)
    assert (c.code, c.kernel_info) == (162, ("unknown connection",))


@pytest.mark.parametrize("name", ["dmesg_split_brain.mx1.txt", "dmesg_split_brain.mx2.txt",
                                  "kmsg_split_brain.mx1.txt", "kmsg_split_brain.mx2.txt"])
def test_kmsg_split_brain_on_real_logs(name: str) -> None:
    lines = real(name).splitlines()
    assert any("Split-Brain detected but unresolved" in ln for ln in lines)
    assert kmsg_split_brain(lines, 0) is True
    assert kmsg_split_brain(lines, 1) is False
    before = lines[: next(i for i, ln in enumerate(lines) if "Split-Brain detected" in ln)]
    assert kmsg_split_brain(before, 0) is False  # the resyncs and the cut before it are no split brain


def test_kmsg_records_are_in_kmsg_format() -> None:
    first = real("kmsg_split_brain.mx1.txt").splitlines()[0]
    assert first.split(";", 1)[0].count(",") >= 3  # prio,seq,usec,flags;text


def test_a_cut_is_no_split_brain() -> None:
    lines = real("dmesg_cut.mx1.txt").splitlines()
    assert any("PingAck did not arrive in time" in ln for ln in lines)
    assert kmsg_split_brain(lines, 0) is False


@pytest.mark.parametrize("node,is_open", [("mx1", True), ("mx2", False)])
def test_read_drbd_in_the_vm_saw_the_split_brain(node: str, is_open: bool) -> None:
    seen = json.loads(real(f"drive_read_split_brain.{node}.txt"))["obs"]
    expected = obs("StandAlone", "Primary", "Unknown").model_copy(update={"open": is_open, "split_brain": True})
    assert DrbdObs(**seen) == expected


def test_reconstructed_src_fixtures_match_the_real_layout() -> None:
    src = (REAL.parent / "sh_status_84_connected_primary.src.txt").read_text()
    keys = [ln.split("=")[0] for ln in real("primary_secondary.mx1.sh_status.txt").splitlines() if ln]
    assert keys == [ln.split("=")[0] for ln in src.splitlines() if ln]
    ev_src = (REAL.parent / "events2_84_connected.src.txt").read_text().splitlines()
    ev_real = real("primary_secondary.mx1.events2.txt").splitlines()
    assert [ln.split()[:2] for ln in ev_real] == [ln.split()[:2] for ln in ev_src]
