"""One-time DRBD set-up of the lab (an explicit command; the reconciler never does this).

Writes /etc/drbd.d/r0.res on both VMs (8.4 syntax, protocol C, `fencing dont-care` by default),
refuses disks that already carry DRBD metadata (unless --wipe zeroes them first), runs
`create-md` and `up` on both, waits for Connected, skips the initial sync with
`new-current-uuid --clear-bitmap` on mx1, makes ext4 once as Primary on mx1, and leaves both Secondary.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lab.client import ExecResult, LabError
from lab.lab import Lab
from lab.topology import DRBD_DISK, NODES
from reconciler.model import DrbdObs
from reconciler.observe.drbd import parse_sh_status

RESOURCE, DEVICE, PORT = "r0", "/dev/drbd0", 7789
CONFIG_PATH = f"/etc/drbd.d/{RESOURCE}.res"
FENCING = ("dont-care", "resource-only", "resource-and-stonith")
NO_MD = "No valid meta data found"
PING_TIMEOUT_DS = 30  # tenths of a second, as drbd.conf counts them


def resource_config(fencing: str = "dont-care", fence_peer: str | None = None) -> str:
    """The r0 resource for both nodes.  dont-care: the reconciler's own guards (and the
    operator's `fenced:`) decide promotion.  `fence_peer`: the handler's path (automatic
    failover: `reconciler fence-peer`, lab.automatic), with a fencing policy other than dont-care."""
    if fencing not in FENCING:
        raise ValueError(f"fencing must be one of {FENCING}")
    if fence_peer is not None and (fencing == "dont-care" or not fence_peer.startswith("/")):
        raise ValueError("a fence-peer handler (an absolute path) goes with a fencing policy other than dont-care")
    handlers = f'  handlers {{ fence-peer "{fence_peer}"; }}\n' if fence_peer else ""
    hosts = "".join(
        f"  on {n.name} {{ device {DEVICE}; disk {DRBD_DISK}; address {n.repl_ip}:{PORT}; meta-disk internal; }}\n"
        for n in NODES
    )
    # ping-timeout 3 s (default 0.5 s): two software-emulated VMs stall for longer than half a second
    # under load, and every missed PingAck dropped the link (with fencing, ran the fence-peer handler,
    # which withdraws the failover candidate); a real cable pull is still seen within ping-int + 3 s
    net = f"  net {{ protocol C; ping-timeout {PING_TIMEOUT_DS}; }}\n"
    return f"resource {RESOURCE} {{\n  disk {{ fencing {fencing}; }}\n{handlers}{net}{hosts}}}\n"


def observe(lab: Lab, name: str) -> DrbdObs:
    """r0 as the project's sh-status parser reads it inside `name`."""
    r = lab.exec(name, ["drbdsetup", "sh-status", RESOURCE], timeout=20).check()
    states = [s for s in parse_sh_status(r.stdout) if s.resource == RESOURCE]
    return states[0].obs if states else DrbdObs(configured=False)


def wait_for(lab: Lab, what: str, ok: Callable[[DrbdObs], bool], timeout: float = 60.0) -> dict[str, DrbdObs]:
    """Poll both nodes until `ok` holds on both; LabError naming the states otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {n.name: observe(lab, n.name) for n in NODES}
        if all(ok(o) for o in seen.values()):
            return seen
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}: {seen}")
        time.sleep(0.5)


def _has_metadata(lab: Lab, name: str) -> bool:
    r = lab.exec(name, ["drbdadm", "dump-md", RESOURCE], timeout=30)
    if r.ok:
        return True
    if NO_MD in r.stdout + r.stderr:
        return False
    raise LabError(f"{name}: cannot tell whether {DRBD_DISK} has DRBD metadata (is {RESOURCE} up?): "
                   f"exit {r.rc}: {r.stderr.strip()}")


def _zero(lab: Lab, name: str) -> None:
    if not lab.exec(name, ["blkdiscard", "-z", DRBD_DISK], timeout=120).ok:
        lab.exec(name, ["dd", "if=/dev/zero", f"of={DRBD_DISK}", "bs=1M", "oflag=direct"], timeout=300)
    if _has_metadata(lab, name):
        raise LabError(f"{name}: {DRBD_DISK} still has DRBD metadata after wiping")


def _both(lab: Lab, argv: list[str], timeout: float = 60.0) -> list[ExecResult]:
    return [lab.exec(n.name, argv, timeout=timeout).check() for n in NODES]


def provision(lab: Lab, fencing: str = "dont-care", wipe: bool = False, fence_peer: str | None = None) -> str:
    """Run the whole set-up; a one-line summary.  LabError (and nothing changed) on used disks."""
    t0 = time.monotonic()
    text = resource_config(fencing, fence_peer)
    for n in NODES:
        lab.exec(n.name, ["cp", "/dev/stdin", CONFIG_PATH], timeout=10, input_text=text).check()
        lab.exec(n.name, ["drbdadm", "dump", RESOURCE], timeout=20).check()
    if wipe:
        _both(lab, ["drbdadm", "down", RESOURCE])
    used = [n.name for n in NODES if _has_metadata(lab, n.name)]
    if used and not wipe:
        raise LabError(f"DRBD metadata already exists on {DRBD_DISK} of {', '.join(used)}; provision only "
                       "sets up fresh disks (--wipe zeroes them first, destroying their contents)")
    for name in used:
        _zero(lab, name)
    _both(lab, ["drbdadm", "create-md", RESOURCE])
    _both(lab, ["drbdadm", "up", RESOURCE])
    wait_for(lab, "Connected", lambda o: o.connection == "Connected")
    first = NODES[0].name
    lab.exec(first, ["drbdadm", "--", "--clear-bitmap", "new-current-uuid", RESOURCE], timeout=60).check()
    wait_for(lab, "UpToDate/UpToDate", lambda o: o.disk == o.peer_disk == "UpToDate")
    lab.exec(first, ["drbdadm", "primary", RESOURCE], timeout=60).check()
    lab.exec(first, ["mkfs.ext4", "-q", DEVICE], timeout=120).check()
    lab.exec(first, ["drbdadm", "secondary", RESOURCE], timeout=60).check()
    wait_for(lab, "Connected Secondary/Secondary",
             lambda o: (o.connection, o.role, o.peer_role) == ("Connected", "Secondary", "Secondary"))
    return (f"provisioned {RESOURCE} ({DEVICE} on {DRBD_DISK}, fencing {fencing}) on "
            f"{', '.join(n.name for n in NODES)} in {time.monotonic() - t0:.1f} s: ext4, both Secondary, UpToDate")
