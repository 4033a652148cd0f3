"""DRBD observation: parsers on verbatim output (tests/fixtures/drbd/README.md says where each
file came from), version detection, split-brain detection from kernel-log lines, module
diagnosis over synthetic fact sets, and read_drbd against this host's real kernel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.model import DrbdObs
from reconciler.observe import drbd_kernel
from reconciler.observe.drbd import (
    DrbdModuleMissing,
    complete,
    device_minor,
    parse_events2,
    parse_proc_drbd,
    parse_sh_status,
    pick,
    read_drbd,
)
from reconciler.observe.drbd_kernel import KernelModules, ModuleFacts, diagnose_module, kmsg_split_brain, parse_version
from reconciler.spec.models import DrbdResource

FIX = Path(__file__).parent / "fixtures" / "drbd"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def obs(cs: str, role: str, peer: str, disk: str, pdsk: str, open_: bool | None = None) -> DrbdObs:
    return DrbdObs(configured=True, role=role, peer_role=peer, connection=cs, disk=disk, peer_disk=pdsk, open=open_)


PROC_CASES = [
    ("proc_84_connected_inconsistent.lab.txt", 0,
     obs("Connected", "Secondary", "Secondary", "Inconsistent", "Inconsistent")),
    ("proc_84_syncsource.lab.txt", 0, obs("SyncSource", "Primary", "Secondary", "UpToDate", "Inconsistent")),
    ("proc_84_synctarget.lab.txt", 0, obs("SyncTarget", "Secondary", "Primary", "Inconsistent", "UpToDate")),
    ("proc_84_primary_connected.lab.txt", 0, obs("Connected", "Primary", "Secondary", "UpToDate", "UpToDate")),
    ("proc_84_wfconnection_primary.lab.txt", 0, obs("WFConnection", "Primary", "Unknown", "UpToDate", "DUnknown")),
    ("proc_84_standalone_after_split_brain.lab.txt", 0,
     obs("StandAlone", "Primary", "Unknown", "UpToDate", "DUnknown")),
    ("proc_84_6_standalone_minor1.issue.txt", 1, obs("StandAlone", "Primary", "Unknown", "UpToDate", "Inconsistent")),
]


@pytest.mark.parametrize("name,minor,expected", PROC_CASES)
def test_parse_proc_drbd(name: str, minor: int, expected: DrbdObs) -> None:
    states = parse_proc_drbd(fixture(name))
    assert [s.minor for s in states] == [minor]
    assert states[0].obs == expected


def test_proc_drbd_unconfigured_minor() -> None:
    # [SRC] drbd_proc.c prints "%2d: cs:Unconfigured" for an allocated but idle minor.
    states = parse_proc_drbd("version: 8.4.11 (api:1/proto:86-101)\n 3: cs:Unconfigured\n")
    assert states[0].minor == 3 and states[0].obs == DrbdObs(configured=False)


def test_parse_sh_status() -> None:
    [s] = parse_sh_status(fixture("sh_status_84_connected_primary.src.txt"))
    assert (s.resource, s.volume, s.minor) == ("r0", 0, 0)
    assert s.obs == obs("Connected", "Primary", "Secondary", "UpToDate", "UpToDate")
    [u] = parse_sh_status(fixture("sh_status_84_unconfigured.src.txt"))
    assert u.obs == DrbdObs(configured=False)
    assert parse_sh_status("") == []  # unknown resource: sh-status prints nothing


def test_parse_events2_84() -> None:
    [s] = parse_events2(fixture("events2_84_connected.src.txt"))
    assert (s.resource, s.minor) == ("r0", 0)
    assert s.obs == obs("Connected", "Primary", "Secondary", "UpToDate", "UpToDate")


def test_parse_events2_9_sync_stream() -> None:
    [s] = parse_events2(fixture("events2_9_sync.test.txt"))
    assert (s.resource, s.volume, s.minor) == ("some-resource", 0, 1000)
    assert s.obs == obs("SyncSource", "Secondary", "Secondary", "UpToDate", "Inconsistent", open_=False)


def test_parse_events2_9_peer_primary() -> None:
    [s] = parse_events2(fixture("events2_9_peer_primary.test.txt"))
    assert s.obs.peer_role == "Primary"
    assert s.obs.connection == "WFReportParams"  # Connected but replication still Off: handshake


def test_parse_events2_no_resource() -> None:
    assert parse_events2(fixture("events2_9_no_resources.test.txt")) == []


def test_events2_standalone_and_connecting() -> None:
    # drbd.md §1.3 (derived): a StandAlone 8.4 connection has no conn-name; 9 says Connecting.
    text = (
        "exists resource name:r0 role:Primary suspended:no\n"
        "exists connection name:r0 peer-node-id:0 connection:StandAlone role:Unknown\n"
        "exists device name:r0 volume:0 minor:0 disk:UpToDate\nexists -\n"
    )
    assert parse_events2(text)[0].obs.connection == "StandAlone"
    assert parse_events2(text.replace("StandAlone", "Connecting"))[0].obs.connection == "WFConnection"


def test_pick_by_minor_volume_and_name() -> None:
    states = parse_proc_drbd(fixture("proc_84_6_standalone_minor1.issue.txt"))
    assert pick(states, "r0", 1) is states[0]
    assert pick(states, "r0", 0) is None  # /proc/drbd has no names: only the minor can match
    sh = parse_sh_status(fixture("sh_status_84_connected_primary.src.txt"))
    assert pick(sh, "r0", None) is sh[0]
    assert pick(sh, "other", None) is None
    assert device_minor("/dev/drbd12") == 12


@pytest.mark.parametrize(
    "name,expected",
    [
        ("drbdadm_version_84_kernel.issue.txt", (8, 4, 11)),
        ("proc_84_connected_inconsistent.lab.txt", (8, 4, 11)),
        ("proc_84_6_standalone_minor1.issue.txt", (8, 4, 6)),
        ("drbdadm_version_no_module.host.txt", None),
    ],
)
def test_parse_version(name: str, expected: tuple[int, int, int] | None) -> None:
    assert parse_version(fixture(name)) == expected


def test_parse_version_modinfo_and_9() -> None:
    assert parse_version("8.4.11\n") == (8, 4, 11)  # modinfo -F version drbd (in-tree)
    assert parse_version("9.2.12\n") == (9, 2, 12)
    assert parse_version("DRBD_KERNEL_VERSION_CODE=0x09001c\nDRBD_KERNEL_VERSION=9.0.28\n") == (9, 0, 28)
    assert parse_version("") is None


def test_split_brain_from_kernel_log() -> None:
    unresolved = fixture("dmesg_84_split_brain_unresolved.lab.txt").splitlines()
    assert kmsg_split_brain(unresolved, 0) is True
    assert kmsg_split_brain(unresolved, 1) is False  # another minor's log says nothing about drbd1
    # the survivor's full log: unresolved at 100.99 s, then manually solved and Connected
    assert kmsg_split_brain(fixture("dmesg_84_split_brain_solved_survivor.lab.txt").splitlines(), 0) is False
    later = fixture("dmesg_84_split_brain_solved_victim.lab.txt").splitlines()
    assert kmsg_split_brain(unresolved + later, 0) is False
    # /dev/kmsg record format
    record = "3,812,100994454,-;block drbd0: Split-Brain detected but unresolved, dropping connection!"
    assert kmsg_split_brain([record], 0)


def test_split_brain_needs_the_log_and_a_disconnected_resource() -> None:
    res = DrbdResource(name="r0", device="/dev/drbd0")
    log = fixture("dmesg_84_split_brain_unresolved.lab.txt").splitlines()
    [standalone] = parse_proc_drbd(fixture("proc_84_standalone_after_split_brain.lab.txt"))
    [connected] = parse_proc_drbd(fixture("proc_84_primary_connected.lab.txt"))
    assert complete(standalone, res, 8, log).split_brain is True
    assert complete(standalone, res, 8, None).split_brain is False  # log unreadable: cannot tell
    assert complete(connected, res, 8, log).split_brain is False  # connected again since: resolved
    [secondary] = parse_proc_drbd(fixture("proc_84_connected_inconsistent.lab.txt"))
    assert complete(secondary, res, 8, []).open is False  # 8.4 refuses any open of a Secondary
    assert complete(None, res, 8, log) == DrbdObs(configured=False)


def test_read_kmsg_is_real_and_filtered() -> None:
    lines = drbd_kernel.read_kmsg(contains="Linux")
    if os.geteuid() == 0:
        assert lines is not None and all("Linux" in ln for ln in lines)


# -- module diagnosis over synthetic fact sets (pure logic) ---------------------------------------

def test_diagnose_newer_kernel_has_module() -> None:
    facts = ModuleFacts(
        running_kernel="6.1.0-55-amd64", loaded=False,
        installed=(KernelModules("6.1.0-55-amd64", False), KernelModules("6.1.0-56-amd64", True, "8.4.11"),
                   KernelModules("6.1.0-9-amd64", True, "8.4.10")),
        load_error="modprobe: FATAL: Module drbd not found in directory /lib/modules/6.1.0-55-amd64\n",
    )
    msg = diagnose_module(facts)
    assert "running kernel is 6.1.0-55-amd64" in msg
    assert "Kernel 6.1.0-56-amd64 has drbd 8.4.11" in msg  # the newest one, by natural order
    assert "(1) install the package that provides drbd.ko for exactly kernel 6.1.0-55-amd64" in msg
    assert "(2) reboot into kernel 6.1.0-56-amd64" in msg
    assert "Module drbd not found" in msg


def test_diagnose_running_modules_dir_gone() -> None:
    facts = ModuleFacts("6.1.0-55-amd64", False, (KernelModules("6.1.0-56-amd64", False),))
    msg = diagnose_module(facts)
    assert "/lib/modules/6.1.0-55-amd64 does not exist" in msg
    assert "newest installed modules belong to kernel 6.1.0-56-amd64, which has no drbd module" in msg
    assert "reboot into kernel 6.1.0-56-amd64 after installing a drbd module for it" in msg


def test_diagnose_nothing_installed() -> None:
    msg = diagnose_module(ModuleFacts("6.18.44-fc-v657", False, ()))
    assert "6.18.44-fc-v657" in msg and "none is installed now" in msg


def test_diagnose_installed_but_not_loadable() -> None:
    facts = ModuleFacts("6.1.0-56-amd64", False, (KernelModules("6.1.0-56-amd64", True, "8.4.11"),),
                        load_error="modprobe: ERROR: could not insert 'drbd': Key was rejected by service\n")
    msg = diagnose_module(facts)
    assert "drbd 8.4.11 is installed for the running kernel 6.1.0-56-amd64" in msg
    assert "Key was rejected" in msg


# -- this host, for real --------------------------------------------------------------------------

def test_read_drbd_on_this_host() -> None:
    """Without a drbd module the reader must say so with the diagnosis, and report nothing up."""
    res = [DrbdResource(name="r0", device="/dev/drbd0")]
    if os.path.exists("/proc/drbd"):
        out = read_drbd(res)  # a real DRBD host (the VM lab): r0 is whatever it is, but is read
        assert set(out) == {"r0"}
        return
    facts = drbd_kernel.gather_module_facts()
    mine = [k for k in facts.installed if k.kernel == facts.running_kernel and k.has_drbd]
    if mine:
        assert read_drbd(res) == {"r0": DrbdObs(configured=False)}
        return
    with pytest.raises(DrbdModuleMissing) as e:
        read_drbd(res)
    assert os.uname().release in str(e.value)
    assert e.value.observations == {"r0": DrbdObs(configured=False)}
