"""A model of two nodes that reproduces the rules of the real systems the planner relies on.

Not a fake of any driver: it models the *world* (the real tools' documented behaviour) so the real planner
can be stepped through arbitrary interleavings and faults:
- DRBD 8.4: promotion refused with a Primary peer while connected (-1) and without
  UpToDate data (-2); demotion refused while mounted (-12); a disconnected Secondary
  still calls itself UpToDate; reconnecting after both sides wrote is a split brain.
- PostgreSQL: WAL is a list of records; a fast shutdown streams the shutdown checkpoint
  only to a connected standby; promotion forks a new timeline; a standby only follows a
  source whose WAL extends its own (a diverged one sits 'waiting'); crash recovery,
  pg_rewind and pg_basebackup as the real tools do them.
- IPv4: deleting a subnet's primary address drops its secondaries unless
  promote_secondaries is set.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache

from tests.sim.coord import NodeCoord, SimEtcd

Rec = tuple[int, str]  # (timeline, unique token)


@lru_cache(maxsize=4096)
def iface(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """ipaddress.ip_interface, remembered: the simulator asks about the same few addresses
    millions of times (parsing them dominated its run time)."""
    return ipaddress.ip_interface(text)


@dataclass
class Pg:
    wal: list[Rec] = field(default_factory=list)
    empty: bool = False
    running: bool = False
    standby: bool = False  # running in recovery
    state: str = "shut down"  # pg_control cluster state while stopped
    history: list[tuple[int, int]] = field(default_factory=list)  # (parent tli, switchpoint)
    control_tli: int = 1
    ckpt_lsn: int | None = None
    standby_signal: bool = False
    follows: tuple[str, int] | None = None  # (host, port) of primary_conninfo
    paused: bool = False
    sync_names: tuple[str, ...] = ()  # synchronous_standby_names

    @property
    def tli(self) -> int:
        return self.wal[-1][0] if self.wal else 1

    @property
    def known_tlis(self) -> int:
        return max([self.tli] + [p for p, _ in self.history])


@dataclass
class Drbd:
    configured: bool = False
    role: str = "Secondary"
    disk: str = "UpToDate"
    data: list[str] = field(default_factory=list)
    standalone: bool = False
    split_brain: bool = False
    peer_fenced: bool = False  # automatic mode: the fence-peer handler succeeded since the link went down


@dataclass
class Addr:
    address: str
    owned: bool


@dataclass
class Iface:
    addresses: list[Addr] = field(default_factory=list)  # kernel order: first in a subnet is primary
    promote_secondaries: bool = False

    def is_secondary(self, a: Addr) -> bool:
        if ":" in a.address:
            return False
        net = iface(a.address).network
        for b in self.addresses:
            if b is a:
                return False
            if ":" not in b.address and iface(b.address).network == net:
                return True
        return False

    def delete(self, address: str) -> bool:
        a = next((x for x in self.addresses if x.address == address), None)
        if a is None:
            return False
        cascade = []
        if not self.is_secondary(a) and ":" not in address and not self.promote_secondaries:
            net = iface(address).network
            cascade = [b for b in self.addresses if b is not a and ":" not in b.address
                       and iface(b.address).network == net]
        self.addresses = [x for x in self.addresses if x is not a and x not in cascade]
        return True


@dataclass
class Node:
    name: str
    on: bool = True
    agent: bool = True
    pg: Pg = field(default_factory=Pg)
    drbd: dict[str, Drbd] = field(default_factory=dict)
    ifaces: dict[str, Iface] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)  # mount point -> device
    services: dict[str, bool] = field(default_factory=dict)
    spec_version: int = 0
    # Parts of this node its agent cannot read for now (a driver failing: "net", "drbd",
    # "postgres", "services"), and "settling": PostgreSQL running but not answering queries.
    blind: set[str] = field(default_factory=set)
    coord: NodeCoord = field(default_factory=NodeCoord)
    paused: bool = False  # the whole machine is stopped (its clock too)
    clock_lag: float = 0.0  # how far its monotonic clock is behind real time (pauses)


@dataclass
class World:
    nodes: dict[str, Node]
    link_up: bool = True  # the replication link (DRBD, WAL streaming) and the peer channel
    channel_up: bool = True  # the peer channel alone
    counter: int = 0
    acked_commits: list[str] = field(default_factory=list)
    acked_files: dict[str, list[str]] = field(default_factory=dict)  # DRBD resource -> writes
    fenced_ever: bool = False
    violations: list[str] = field(default_factory=list)
    now: float = 0.0  # real time (the etcd servers' clock)
    etcd: SimEtcd | None = None  # automatic mode only

    def local(self, name: str) -> float:
        """`name`'s monotonic clock."""
        return self.now - self.nodes[name].clock_lag

    def token(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def peer(self, name: str) -> Node:
        return next(n for n in self.nodes.values() if n.name != name)

    def reachable(self, a: str, b: str) -> bool:
        na, nb = self.nodes[a], self.nodes[b]
        return na.on and nb.on and self.link_up

    def channel(self, a: str, b: str) -> bool:
        return self.reachable(a, b) and self.channel_up and self.nodes[b].agent
