"""One lab VM: the qemu argv, starting it in the lab's netns, stopping it by PID.

qemu runs under TCG (this host's /dev/kvm cannot run a stock kernel), daemonized with a
pidfile; a PID is only signalled while /proc/PID/cmdline still names that pidfile, so a
recycled PID is never hit.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from lab.agent import PORT_NAME
from lab.client import LabError
from lab.topology import BOOT_HOOK, GUEST_PATH_RE, HIDDEN_DIRS, MEM_MB, PERSIST_SERIAL, PERSISTED, Layout, Node
from reconciler import _cmd

QEMU = "qemu-system-x86_64"
# Two vCPUs: with one, the e2e split-brain scenario hung mx1 in 3 of 5 runs (an RCU stall, then
# a soft lockup in a postgres process that never ended: the guest's userspace, the lab agent
# included, never ran again); a real server has more than one CPU.
VCPUS = 2


def qemu_argv(lay: Layout, n: Node, kernel: str) -> list[str]:
    for path in (str(lay.agent), *lay.guest_keep):
        if not GUEST_PATH_RE.match(path) or "/../" in path + "/":
            raise LabError(f"the lab cannot show {path} to its guests (kernel command line and "
                           f"the guest's mount commands allow only {GUEST_PATH_RE.pattern}): clone elsewhere")
        if os.path.normpath(path) in HIDDEN_DIRS:
            raise LabError(f"the lab cannot show {path} to its guests (they mount their own "
                           f"{' and '.join(HIDDEN_DIRS)}): clone into a directory below it")
    if any(c.isspace() or c == "," for c in str(lay.node_dir(n))):
        raise LabError(f"the lab state directory cannot hold spaces or commas: {lay.node_dir(n)}")
    append = (f"console=ttyS0 panic=-1 loglevel=5 lab.host={n.name} lab.repl={n.repl_ip}/24 "
              f"lab.mgmt={n.mgmt_ip(lay.mgmt_net)}/24 lab.agent={lay.agent} "
              f"lab.keep={','.join(lay.guest_keep)} lab.persist={PERSIST_SERIAL}:{','.join(PERSISTED)} "
              f"lab.boot={BOOT_HOOK}")
    return [
        QEMU, "-name", f"{lay.name}-{n.name}", "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", str(VCPUS),
        "-m", str(MEM_MB), "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        # appended to, so that a node's consoles of every boot stay readable
        "-chardev", f"file,id=con,path={lay.console(n)},append=on", "-serial", "chardev:con",
        "-kernel", kernel, "-initrd", str(lay.initrd), "-append", append,
        "-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot",
        # cache=unsafe: qemu ignores the guest's flushes, but every write it received is in the
        # host's page cache, which killing qemu (the lab's power cut) does not lose; what the
        # guest had not written out yet is lost, as on real hardware.
        "-drive", f"file={lay.disk(n)},format=raw,if=none,id=drbd,cache=unsafe",
        "-device", "virtio-blk-pci,drive=drbd,serial=labdrbd",
        "-drive", f"file={lay.persist(n)},format=raw,if=none,id=persist,cache=unsafe",
        "-device", f"virtio-blk-pci,drive=persist,serial={PERSIST_SERIAL}",
        "-netdev", f"tap,id=repl,ifname={n.repl_tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=repl,mac={n.mac('repl')}",
        "-netdev", f"tap,id=mgmt,ifname={n.mgmt_tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=mgmt,mac={n.mac('mgmt')}",
        "-chardev", f"socket,id=ctl,path={lay.sock(n)},server=on,wait=off",
        "-device", "virtio-serial-pci", "-device", f"virtserialport,chardev=ctl,name={PORT_NAME}",
        "-pidfile", str(lay.pidfile(n)), "-daemonize",
    ]


def start(lay: Layout, n: Node, kernel: str) -> int:
    """Start the VM daemonized inside the lab netns; its qemu PID."""
    res = _cmd.run(["ip", "netns", "exec", lay.netns, *qemu_argv(lay, n, kernel)], timeout=60)
    if not res.ok:
        raise LabError(f"qemu for {n.name} did not start: {res.describe()}")
    pid = read_pid(lay.pidfile(n))
    if pid is None:
        raise LabError(f"qemu for {n.name} started but wrote no pidfile {lay.pidfile(n)}")
    return pid


def read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def is_ours(pid: int, pidfile: Path) -> bool:
    """The process is alive and is the qemu that wrote `pidfile` (not a recycled PID)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return str(pidfile).encode() in args


def stop(pid: int, pidfile: Path, grace_s: float = 5.0, term: bool = True) -> bool:
    """SIGTERM, then SIGKILL after `grace_s` (at once with term=False: the lab's power cut);
    True if a process of ours was stopped."""
    if not is_ours(pid, pidfile):
        return False
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0))[0 if term else 1:]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not is_ours(pid, pidfile):
                return True
            time.sleep(0.05)
    raise LabError(f"qemu PID {pid} did not exit after SIGKILL")
