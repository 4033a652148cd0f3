"""Capture real DRBD 8.4 output in the lab VMs into tests/fixtures/drbd/real/ (+ README.md).

Run as root from the checkout: `.venv/bin/python -m tests.drbd_capture` (about 2 minutes).
It brings its own lab up and down; every file is a command's verbatim stdout (or, for a
failing command, its stderr), and README.md records node, argv, exit code and step.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.client import ExecResult, LabError
from lab.lab import Lab
from lab.provision import CONFIG_PATH, DEVICE, RESOURCE, observe, provision, resource_config
from lab.topology import layout_from_env

OUT = Path(__file__).resolve().parent / "fixtures" / "drbd" / "real"
MNT = "/mnt/r0"
PY = str(Path(sys.executable).parent / "python")
STATUS = {
    "sh_status": ["drbdsetup", "sh-status", RESOURCE],
    "events2": ["drbdsetup", "events2", "--now", RESOURCE],
    "proc_drbd": ["cat", "/proc/drbd"],
}
KMSG = [PY, "-c", "from reconciler.observe.drbd_kernel import read_kmsg; print(*read_kmsg(), sep='\\n')"]


@dataclass
class Capture:
    lab: Lab
    rows: list[str] = field(default_factory=list)

    def save(self, name: str, node: str, argv: list[str], step: str, want_rc: int | None = 0,
             env: dict[str, str] | None = None) -> ExecResult:
        """Run argv on node; keep stdout (rc 0) or stderr (else) as NAME.txt; check the exit code."""
        r = self.lab.exec(node, argv, timeout=120, env=env)
        if want_rc is not None and r.rc != want_rc:
            raise LabError(f"{name}: expected exit {want_rc}, got {r.rc}: {r.stderr.strip()}")
        text = r.stdout if r.rc == 0 else r.stderr
        (OUT / f"{name}.txt").write_bytes(text.encode("utf-8", "surrogateescape"))
        shown = " ".join(a if " " not in a else repr(a) for a in argv).replace(PY, "python")
        self.rows.append(f"| `{name}.txt` | {node} | `{shown}` | {r.rc} | {step} |")
        return r

    def status(self, state: str, node: str, step: str) -> None:
        for tool, argv in STATUS.items():
            self.save(f"{state}.{node}.{tool}", node, argv, step)

    def run(self, node: str, argv: list[str], want_rc: int | None = 0) -> ExecResult:
        r = self.lab.exec(node, argv, timeout=120)
        if want_rc is not None and r.rc != want_rc:
            raise LabError(f"{node}: {' '.join(argv)}: exit {r.rc}: {r.stderr.strip()}")
        return r


def wait_cstate(lab: Lab, want: dict[str, str], timeout: float = 60.0) -> float:
    """Poll sh-status until each node's connection state is as wanted; seconds waited."""
    t0 = time.monotonic()
    while {n: observe(lab, n).connection for n in want} != want:
        if time.monotonic() - t0 > timeout:
            raise LabError(f"timed out waiting for {want}")
        time.sleep(0.5)
    return time.monotonic() - t0


def before_provision(c: Capture) -> None:
    c.save("drbdadm_version.not_loaded.mx1", "mx1", ["drbdadm", "--version"], "fresh VM, module not loaded")
    c.save("sh_status.not_up.mx1", "mx1", ["drbdsetup", "sh-status", RESOURCE],
           "r0 not up (drbdsetup loads the module itself); prints nothing", want_rc=19)
    c.save("events2.not_up.mx1", "mx1", ["drbdsetup", "events2", "--now", RESOURCE], "r0 not up")
    c.save("proc_drbd.no_minors.mx1", "mx1", ["cat", "/proc/drbd"], "module loaded, nothing up")


def connected_and_primary(c: Capture) -> None:
    c.save("drbdadm_version.loaded.mx1", "mx1", ["drbdadm", "--version"], "after provision")
    for n in ("mx1", "mx2"):
        c.status("connected_secondary", n, "after `provision`: Connected Secondary/Secondary UpToDate")
    c.run("mx1", ["drbdadm", "primary", RESOURCE])
    for n in ("mx1", "mx2"):
        c.status("primary_secondary", n, "after `drbdadm primary r0` on mx1")
    c.run("mx1", ["mkdir", "-p", MNT])
    c.run("mx1", ["mount", DEVICE, MNT])
    c.save("err_secondary_held_open.rc11.mx1", "mx1", ["drbdadm", "secondary", RESOURCE],
           f"mx1 Primary with {DEVICE} mounted on {MNT}", want_rc=11)
    c.save("err_down_held_open.rc11.mx1", "mx1", ["drbdadm", "down", RESOURCE], "same, `down`", want_rc=11)
    c.save("err_primary_two_primaries.rc11.mx2", "mx2", ["drbdadm", "primary", RESOURCE],
           "mx1 is Primary and Connected", want_rc=11)


def standalone(c: Capture) -> None:
    c.run("mx2", ["drbdadm", "disconnect", RESOURCE])
    wait_cstate(c.lab, {"mx1": "WFConnection", "mx2": "StandAlone"})
    c.status("standalone_secondary", "mx2", "`drbdadm disconnect r0` on mx2 (mx1 Primary)")
    c.status("wfconnection_primary_peer_disconnected", "mx1", "mx1's view of that")
    c.save("err_disconnect_standalone.mx2", "mx2", ["drbdadm", "disconnect", RESOURCE],
           "`disconnect` again while StandAlone", want_rc=None)
    c.run("mx2", ["drbdadm", "connect", RESOURCE])
    wait_cstate(c.lab, {"mx1": "Connected", "mx2": "Connected"})


def cut_link(c: Capture) -> float:
    c.lab.set_link("mx2", up=False)
    waited = wait_cstate(c.lab, {"mx1": "WFConnection", "mx2": "WFConnection"})
    c.run("mx1", ["dd", "if=/dev/urandom", f"of={MNT}/while-cut", "bs=4k", "count=16", "conv=fsync"])
    c.status("wfconnection_primary_cut", "mx1", "after `lab cut mx2` (mx1 Primary, wrote 64 KiB since)")
    c.status("wfconnection_secondary_cut", "mx2", "after `lab cut mx2` (mx2 Secondary)")
    c.save("dmesg_cut.mx1", "mx1", ["dmesg"], "kernel log on mx1 after the cut")
    _fencing(c, "mx2", "resource-only")
    c.save("err_primary_peer_not_outdated.rc11.mx2", "mx2", ["drbdadm", "primary", RESOURCE],
           "mx2 cut off, `fencing resource-only` set by `drbdadm adjust`, no fence-peer handler", want_rc=11)
    _fencing(c, "mx2", "dont-care")
    return waited


def _fencing(c: Capture, node: str, fencing: str) -> None:
    c.lab.exec(node, ["cp", "/dev/stdin", CONFIG_PATH], timeout=10, input_text=resource_config(fencing)).check()
    c.run(node, ["drbdadm", "adjust", RESOURCE])


def split_brain(c: Capture) -> None:
    c.run("mx2", ["drbdadm", "primary", RESOURCE])  # fencing dont-care: DRBD lets it
    c.run("mx2", ["mkdir", "-p", MNT])
    c.run("mx2", ["mount", DEVICE, MNT])
    c.run("mx2", ["dd", "if=/dev/urandom", f"of={MNT}/on-mx2", "bs=4k", "count=8", "conv=fsync"])
    c.run("mx2", ["umount", MNT])
    c.status("wfconnection_primary_both", "mx2", "mx2 promoted while cut: both Primary")
    c.lab.set_link("mx2", up=True)
    wait_cstate(c.lab, {"mx1": "StandAlone", "mx2": "StandAlone"}, timeout=90)
    for n in ("mx1", "mx2"):
        c.status("split_brain", n, "`lab restore mx2` after both were Primary: handshake found a split brain")
        c.save(f"dmesg_split_brain.{n}", n, ["dmesg"], "kernel log after the split brain")
        c.save(f"kmsg_split_brain.{n}", n, KMSG, "/dev/kmsg records containing drbd (read_kmsg)")
        c.save(f"drive_read_split_brain.{n}", n, [PY, "-m", "lab.drive", "read", RESOURCE, DEVICE],
               "the project's read_drbd, run in the VM", env=c.lab.lay.guest_env)


README_HEAD = """# Real DRBD 8.4 output, captured in the project's VM lab

Captured by `tests/drbd_capture.py` (`.venv/bin/python -m tests.drbd_capture`, as root) in
the two-VM lab (`lab/`): Debian kernel {kernel} with its in-tree DRBD 8.4.11,
drbd-utils 9.22.0 (the host's, through the read-only shared root), resource `r0` as written by
`python -m lab provision` (protocol C, `fencing dont-care`, /dev/vda, skip-sync).
Each file is the command's verbatim stdout when it exited 0, else its verbatim stderr.
Steps run in the order below; `rc` is the exit code.

| file | node | command | rc | state / step |
|---|---|---|---|---|
"""


def main() -> int:
    lab = Lab(layout_from_env())
    OUT.mkdir(parents=True, exist_ok=True)
    for old in [*OUT.glob("*.txt"), OUT / "README.md"]:  # this script's own previous captures
        old.unlink(missing_ok=True)
    c = Capture(lab)
    t0 = time.monotonic()
    try:
        print(f"up {lab.up():.1f} s", flush=True)
        before_provision(c)
        print(provision(lab), flush=True)
        connected_and_primary(c)
        standalone(c)
        print(f"cut noticed after {cut_link(c):.1f} s", flush=True)
        split_brain(c)
        kernel = lab.status()["kernel"]
    finally:
        lab.down()
    (OUT / "README.md").write_text(README_HEAD.format(kernel=kernel) + "\n".join(c.rows) + "\n")
    print(f"captured {len(c.rows)} files into {OUT} in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
