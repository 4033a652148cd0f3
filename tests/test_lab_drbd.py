"""The project's DRBD driver against real DRBD 8.4 in the two-VM lab (slow: about 2-3 minutes).

lab up -> provision -> `python -m lab.drive` (read_drbd / primary / secondary)
inside the VMs -> cut/restore mx2's replication link -> lab down.  Every assertion is on
what the driver observed or returned in the VM.

The guests run a copy of lab/ and reconciler/ made under /tmp, which they mount over with
their own tmpfs (lab.initrd binds it back): this tier proves the lab works from a clone
under /tmp wherever this checkout itself lives.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.client import LabError
from lab.lab import Lab
from lab.provision import DEVICE, RESOURCE, observe, provision
from lab.topology import CHECKOUT, Layout
from reconciler.execute.drbd import RETRY_DELAYS_S
from tests.conftest import need_lab

pytestmark = pytest.mark.slow
PY = str(Path(sys.executable).parent / "python")
MNT = "/mnt/r0"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    need_lab()
    # Under /tmp whatever TMPDIR or pytest's --basetemp say: that is the case to prove.
    code = Path(tempfile.mkdtemp(prefix="reconciler-lab-checkout-", dir="/tmp"))
    try:
        for pkg in ("lab", "reconciler"):
            shutil.copytree(CHECKOUT / pkg, code / pkg, ignore=shutil.ignore_patterns("__pycache__"))
        lab = Lab(Layout("rlabtest", tmp_path_factory.mktemp("lab"), code), owned=True)
        t0 = time.monotonic()
        try:
            print(f"\nlab up {lab.up():.1f} s (code in {code})")
            print(provision(lab))
            yield lab
        finally:
            lab.down()
            print(f"lab total {time.monotonic() - t0:.1f} s")
        assert not lab.lay.journal.exists()
    finally:
        shutil.rmtree(code)


def drive(lab: Lab, node: str, verb: str) -> dict[str, Any]:
    r = lab.exec(node, [PY, "-m", "lab.drive", verb, RESOURCE, DEVICE], timeout=120, env=lab.lay.guest_env).check()
    return dict(json.loads(r.stdout))


def wait_connection(lab: Lab, want: dict[str, str], timeout: float = 60.0) -> float:
    t0 = time.monotonic()
    while {n: observe(lab, n).connection for n in want} != want:
        if time.monotonic() - t0 > timeout:
            raise LabError(f"timed out waiting for {want}")
        time.sleep(0.5)
    return time.monotonic() - t0


def test_guests_run_the_checkout_copied_under_tmp(lab: Lab) -> None:
    # The agent answering already shows lab/agent.py was found under /tmp; the project's code
    # imported in the guest must be that copy too, not the host checkout's.
    assert str(lab.lay.code).startswith("/tmp/") and lab.lay.code != CHECKOUT
    probe = "import lab.drive, reconciler; print(lab.drive.__file__); print(reconciler.__file__)"
    for n in ("mx1", "mx2"):
        out = lab.exec(n, [PY, "-c", probe], timeout=60, env=lab.lay.guest_env).check().stdout.split()
        assert out == [str(lab.lay.code / "lab" / "drive.py"), str(lab.lay.code / "reconciler" / "__init__.py")]


def test_read_after_provision(lab: Lab) -> None:
    for node in ("mx1", "mx2"):
        o = drive(lab, node, "read")["obs"]
        assert (o["configured"], o["connection"], o["role"], o["peer_role"]) == (
            True, "Connected", "Secondary", "Secondary")
        assert (o["disk"], o["peer_disk"], o["open"], o["split_brain"]) == ("UpToDate", "UpToDate", False, False)


def test_primary_refusal_and_held_open_secondary(lab: Lab) -> None:
    assert drive(lab, "mx1", "primary")["outcome"] == "ok"
    assert drive(lab, "mx1", "read")["obs"]["role"] == "Primary"
    refused = drive(lab, "mx2", "primary")
    assert (refused["outcome"], refused["code"], refused["attempts"]) == ("two_primaries", -1, 1)
    lab.exec("mx1", ["mkdir", "-p", MNT]).check()
    lab.exec("mx1", ["mount", DEVICE, MNT]).check()
    holder = lab.spawn("mx1", ["python3", "-c", f"import time; f = open('{MNT}/held', 'w'); time.sleep(900)"])
    try:
        time.sleep(1.0)
        assert not lab.exec("mx1", ["umount", MNT]).ok  # the holder keeps the mount busy
        assert drive(lab, "mx1", "read")["obs"]["open"] is True
        held = drive(lab, "mx1", "secondary")
        assert (held["outcome"], held["code"]) == ("held_open", -12)
        assert held["attempts"] == 1 + len(RETRY_DELAYS_S)
        assert "fuser -vm /dev/drbd0" in held["message"]
    finally:
        lab.exec("mx1", ["kill", str(holder)])
    lab.exec("mx1", ["umount", MNT]).check()
    assert drive(lab, "mx1", "secondary")["outcome"] == "ok"
    o = drive(lab, "mx1", "read")["obs"]
    assert (o["role"], o["peer_role"], o["open"]) == ("Secondary", "Secondary", False)


def test_cut_and_restore(lab: Lab) -> None:
    lab.set_link("mx2", up=False)
    try:
        print(f"cut noticed after {wait_connection(lab, {'mx1': 'WFConnection', 'mx2': 'WFConnection'}):.1f} s")
        for node in ("mx1", "mx2"):
            o = drive(lab, node, "read")["obs"]
            assert (o["connection"], o["peer_role"], o["peer_disk"]) == ("WFConnection", "Unknown", "DUnknown")
            assert o["split_brain"] is False
    finally:
        lab.set_link("mx2", up=True)
    print(f"reconnected after {wait_connection(lab, {'mx1': 'Connected', 'mx2': 'Connected'}):.1f} s")
    o = drive(lab, "mx2", "read")["obs"]
    assert (o["connection"], o["peer_role"], o["disk"], o["peer_disk"]) == (
        "Connected", "Secondary", "UpToDate", "UpToDate")
