"""reconciler.coord.watchdog against a real watchdog: Linux's softdog in a lab VM (Debian's kernel;
the host kernel of these machines has no watchdog).  qemu runs with -no-reboot, so the reset the
watchdog triggers ends the VM's qemu, which the host sees.

Fed, the VM outlives several timeouts and a magic close disarms it; armed and then left alone (the
process that armed it exits without the magic character, as a hung or killed holder would), the VM
is reset after the timeout, not before.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.lab import Lab
from lab.topology import Layout
from tests.conftest import need_lab

pytestmark = pytest.mark.slow
PY = str(Path(sys.executable).parent / "python")
TIMEOUT = 3

FED = f"""
import json, time
from reconciler.coord.watchdog import Watchdog
w = Watchdog("/dev/watchdog", {TIMEOUT})
t0 = time.monotonic()
while time.monotonic() - t0 < {3 * TIMEOUT}:
    w.feed()
    time.sleep(0.5)
print(json.dumps({{"identity": w.identity, "timeout": w.timeout, "fed_s": time.monotonic() - t0,
                  "disarmed": w.disarm()}}))
"""

LEFT_ALONE = f"""
from reconciler.coord.watchdog import Watchdog
w = Watchdog("/dev/watchdog", {TIMEOUT})
print(w.timeout)
"""  # exits without the magic character: the kernel keeps the watchdog armed, nobody feeds it


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    need_lab()
    lab = Lab(Layout("rlabwd", tmp_path_factory.mktemp("lab-wd")), owned=True)
    try:
        print(f"\nlab up {lab.up():.1f} s")
        yield lab
    finally:
        print(lab.keep_consoles(tmp_path_factory.getbasetemp()))
        lab.down()
    assert not lab.lay.journal.exists()


def _py(lab: Lab, node: str, code: str, timeout: float = 120) -> str:
    return lab.exec(node, [PY, "-c", code], timeout=timeout, env=lab.lay.guest_env).check().stdout


def test_fed_it_never_fires_and_a_magic_close_disarms_it(lab: Lab) -> None:
    lab.exec("mx1", ["modprobe", "softdog"], timeout=60).check()
    out = json.loads(_py(lab, "mx1", FED))
    assert out["timeout"] == TIMEOUT and out["identity"] == "Software Watchdog" and out["disarmed"] is True
    assert out["fed_s"] >= 3 * TIMEOUT
    time.sleep(2 * TIMEOUT)  # disarmed: nothing fires
    assert lab.running("mx1")
    assert lab.exec("mx1", ["true"], timeout=60).rc == 0


def test_armed_and_left_alone_it_resets_the_machine_after_its_timeout(lab: Lab) -> None:
    assert _py(lab, "mx1", LEFT_ALONE).strip() == str(TIMEOUT)
    armed_by = time.monotonic()  # the exec returned: armed at most this long ago
    took = lab.wait_off("mx1", timeout=TIMEOUT + 60)
    print(f"mx1 reset {took:.1f} s after the arming process returned (timeout {TIMEOUT} s)")
    assert not lab.running("mx1")
    assert time.monotonic() - armed_by >= TIMEOUT - 1.0  # not before its timeout (1 s: the exec's own return)
    assert lab.running("mx2")  # only the machine that armed it
