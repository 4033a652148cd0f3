"""What the lab is made of: names, addresses, MACs, paths.  Pure data, no I/O.

Replication (eth0, 10.0.0.0/24 as in specs/cluster.example.yaml) and management (eth1,
with the host at .1) are two bridges in one network namespace; the host reaches the
management bridge through a veth pair.  Only the host veth lives outside the namespace.
The replication subnet is private to the namespace; the management subnet is on the host,
so each lab name gets its own (10.250.0.0/24 for the default lab, another 10.250.N.0/24
for any other name) and two labs, say the tests' and an operator's, can be up at once.
"""

from __future__ import annotations

import os
import re
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
DEFAULT_NAME = "rlab"
DEFAULT_STATE = "/run/reconciler-lab"
REPL_NET = "10.0.0"
DISK_MB = 256
MEM_MB = 512
DRBD_DISK = "/dev/vda"  # the first virtio disk in each VM: the DRBD backing device
# The second one, found by its serial, is the node's own persistent storage: formatted ext4
# on first boot, mounted on /persist, and each PERSISTED directory bind-mounted from it, so
# that configuration, PostgreSQL's data and the agent's state survive a reboot or a power
# cut (everything else of the guest is tmpfs).
PERSIST_SERIAL = "labpersist"
PERSIST_MB = 512
PERSISTED = ("/etc/reconciler", "/etc/drbd.d", "/etc/postfix", "/var/lib/drbd", "/var/lib/reconciler", "/var/lib/rce2e")
# Run in the background at every boot when present (root's, executable): the lab's stand-in
# for the systemd units that start the agent (see lab.cluster.LabCluster.install_boot).
BOOT_HOOK = "/etc/reconciler/lab-boot"
CHECKOUT = Path(__file__).resolve().parents[1]
# A host path shown to the guest goes on the kernel command line and into a shell word
# of the guest's lab-init: nothing that either would split.
GUEST_PATH_RE = re.compile(r"^/[A-Za-z0-9._/+@=-]*$")
# The guests mount fresh tmpfs here; a kept path below one is bind-mounted back (lab.initrd).
HIDDEN_DIRS = ("/tmp", "/run")


@dataclass(frozen=True)
class Node:
    name: str
    index: int  # 1 or 2

    @property
    def repl_ip(self) -> str:
        return f"{REPL_NET}.{self.index}"

    def mgmt_ip(self, net: str) -> str:
        return f"{net}.{10 + self.index}"

    @property
    def repl_tap(self) -> str:
        return f"r{self.index}"

    @property
    def mgmt_tap(self) -> str:
        return f"m{self.index}"

    def mac(self, link: str) -> str:
        return f"52:54:00:{'4c' if link == 'repl' else '4d'}:00:{self.index:02x}"


NODES = (Node("mx1", 1), Node("mx2", 2))


def node(name: str) -> Node:
    for n in NODES:
        if n.name == name:
            return n
    raise ValueError(f"unknown lab node {name!r} (the lab has {', '.join(n.name for n in NODES)})")


@dataclass(frozen=True)
class Layout:
    """Names of everything `up` creates for one lab; `name` prefixes the host-visible ones."""

    name: str
    state: Path
    # The checkout whose lab/agent.py and reconciler/ the guests run (another copy in tests).
    code: Path = field(default=CHECKOUT)

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(f"invalid lab name {self.name!r} (allowed: {NAME_RE.pattern})")
        if not self.state.is_absolute():
            raise ValueError(f"lab state directory must be absolute: {self.state}")
        if not self.code.is_absolute():
            raise ValueError(f"lab code directory must be absolute: {self.code}")

    @property
    def agent(self) -> Path:
        """The guest's PID-1 loop runs this file (with the guest's /usr/bin/python3 -I)."""
        return self.code / "lab" / "agent.py"

    @property
    def guest_env(self) -> dict[str, str]:
        """Environment for `python -m lab.drive` / `-m reconciler` run inside a guest."""
        return {"PYTHONPATH": str(self.code)}

    @property
    def guest_keep(self) -> tuple[str, ...]:
        """Host directories the guest must see at the same path: the code and the venv.

        The guest mounts fresh tmpfs on /tmp and /run (a host's /run would make its tools
        believe systemd runs), so a checkout or venv under either is bind-mounted back there,
        read-only, from the host's root (see lab.initrd); the guest ignores the others, which
        it sees anyway.  Nested paths collapse into their parent."""
        paths = sorted({os.path.normpath(str(self.code)), os.path.normpath(sys.prefix)})
        kept: list[str] = []
        for p in paths:
            if not any(p == k or p.startswith(k.rstrip("/") + "/") for k in kept):
                kept.append(p)
        return tuple(kept)

    @property
    def netns(self) -> str:
        return self.name

    @property
    def mgmt_net(self) -> str:
        """The first three octets of this lab's management /24 (see the module's docstring)."""
        if self.name == DEFAULT_NAME:
            return "10.250.0"
        return f"10.250.{1 + zlib.crc32(self.name.encode()) % 254}"

    @property
    def host_mgmt_ip(self) -> str:
        return f"{self.mgmt_net}.1"

    @property
    def host_veth(self) -> str:
        return f"{self.name}-m0"

    def node_dir(self, n: Node) -> Path:
        return self.state / n.name

    def sock(self, n: Node) -> Path:
        return self.node_dir(n) / "ctl.sock"

    def disk(self, n: Node) -> Path:
        return self.node_dir(n) / "disk.img"

    def persist(self, n: Node) -> Path:
        """The node's own storage (PERSISTED), kept across its reboots; removed by `down`."""
        return self.node_dir(n) / "persist.img"

    def pidfile(self, n: Node) -> Path:
        return self.node_dir(n) / "qemu.pid"

    def console(self, n: Node) -> Path:
        return self.node_dir(n) / "console.log"

    @property
    def journal(self) -> Path:
        return self.state / "lab.json"

    @property
    def initrd(self) -> Path:
        return self.state / "initrd.cpio"


def layout_from_env(name: str | None = None, state: str | None = None) -> Layout:
    """Flags win over RECONCILER_LAB_NAME / RECONCILER_LAB_DIR, which win over the defaults."""
    return Layout(
        name or os.environ.get("RECONCILER_LAB_NAME") or DEFAULT_NAME,
        Path(state or os.environ.get("RECONCILER_LAB_DIR") or DEFAULT_STATE),
    )
