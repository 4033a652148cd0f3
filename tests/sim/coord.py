"""A model of etcd, the lease keeper and the watchdog for the simulated cluster (automatic mode).

What it reproduces of the real systems (reference: automatic-failover.md):
- three etcd members, one per node and one on the witness; a request succeeds only through a
  member that is connected to a majority (two of three); the two nodes' members talk over the
  nodes' own link, each node to the witness over its own path, and any of those can be cut;
- leases expire by the *server's* clock (real time here), only while the cluster has a raft
  leader; when the raft leader is cut off it keeps answering keepalives for STALE_S (1.7 s
  measured) without the majority extending anything, and the new leader then extends every
  lease to its election time + TTL (etcd's lessor.Promote);
- each node has its own monotonic clock, which stops while the node is paused (a VM stopped,
  a SIGSTOPped machine): the keeper's local deadline is counted on it;
- the keeper renews only while the agent's heartbeat is fresh, never revokes, and feeds the
  watchdog only after an answered keepalive; an armed watchdog that is not fed for its timeout
  (node clock) resets the node;
- transactions compare and write atomically; a snapshot restore puts an older keyspace back.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from reconciler.coord import claim
from reconciler.model import CoordObs

WITNESS = "wit"
STALE_S = 1.7  # an isolated etcd leader answers keepalives this long (measured, reference section 4)
HEARTBEAT_MAX_AGE = 4.0  # the keeper pauses when the agent's heartbeat is older (node clock)


@dataclass
class Keyspace:
    epoch: int = 0
    leader: tuple[str, int, int] | None = None  # (node, epoch, lease)
    candidate: tuple[str, int] | None = None  # (node, epoch)
    acquired: tuple[str, int] | None = None  # PREFIX/acquired: (node, epoch), written with the epoch
    leases: dict[int, float] = field(default_factory=dict)  # lease -> expiry (server time)
    next_lease: int = 1


@dataclass
class NodeCoord:
    """One node's keeper, watchdog and agent state file (the state file survives a reboot)."""

    lease: int | None = None
    last_good: float | None = None  # node clock: send time of the last answered keepalive
    # node clock: the same, for the lease the claim holds (only those feed the watchdog, as in
    # agent/coordination.py: a keeper that had to take a new lease renews nothing the key hangs on)
    held_good: float | None = None
    heartbeat: float = 0.0  # node clock: the agent's last step
    keeper_stopped: bool = False  # SIGSTOPped keeper
    wd_armed: bool = False
    wd_fed: float = 0.0  # node clock
    paused_since_renewal: bool = False
    # the agent's state file
    held: tuple[int, int | None, str | None] | None = None  # (epoch, lease, revision) it acquired
    remembered: int = 0


def _claim(c: NodeCoord) -> claim.Claim:
    e, lease, rev = c.held or (None, None, None)
    return claim.Claim(remembered_epoch=c.remembered, held_epoch=e, held_lease=lease, held_revision=rev)


@dataclass
class SimEtcd:
    ttl: float
    wd_timeout: float
    keys: Keyspace = field(default_factory=Keyspace)
    down: set[str] = field(default_factory=set)  # members stopped
    wit_cut: set[str] = field(default_factory=set)  # nodes cut from the witness
    raft_leader: str = WITNESS
    isolated_since: float | None = None  # the raft leader lost its majority at this time
    snapshots: list[Keyspace] = field(default_factory=list)
    issued: list[tuple[int, str]] = field(default_factory=list)  # (epoch, node) in acquisition order

    # ---- topology ---------------------------------------------------------------------------

    def linked(self, world, a: str, b: str) -> bool:
        if a == b:
            return True
        if WITNESS in (a, b):
            n = b if a == WITNESS else a
            return n not in self.wit_cut
        return world.link_up

    def member_up(self, world, m: str) -> bool:
        if m in self.down:
            return False
        return m == WITNESS or world.nodes[m].on and not world.nodes[m].paused

    def members(self, world) -> list[str]:
        return [*world.nodes, WITNESS]

    def in_majority(self, world, m: str) -> bool:
        if not self.member_up(world, m):
            return False
        return any(o != m and self.member_up(world, o) and self.linked(world, m, o) for o in self.members(world))

    def client_ok(self, world, node: str) -> bool:
        """A linearizable request from `node` succeeds: some member it reaches has a majority."""
        n = world.nodes[node]
        if not n.on or n.paused:
            return False
        return any(self.linked(world, node, m) and self.in_majority(world, m) for m in self.members(world))

    def stale_ack(self, world, node: str) -> bool:
        """`node`'s own member is the raft leader that lost its majority less than STALE_S ago:
        it still answers keepalives, and nothing is extended."""
        return (self.raft_leader == node and self.isolated_since is not None
                and world.now - self.isolated_since < STALE_S and self.member_up(world, node))

    def settle(self, world) -> None:
        """Raft leadership and lease expiry after time passed or the topology changed."""
        if self.in_majority(world, self.raft_leader):
            self.isolated_since = None
        elif self.isolated_since is None:
            self.isolated_since = world.now
        if self.isolated_since is not None and world.now - self.isolated_since >= STALE_S:
            new = next((m for m in self.members(world) if self.in_majority(world, m)), None)
            if new is not None:  # election: the new leader extends every lease (lessor.Promote)
                self.raft_leader, elected = new, self.isolated_since + STALE_S
                self.isolated_since = None
                for lease, exp in self.keys.leases.items():
                    self.keys.leases[lease] = max(exp, elected + self.ttl)
        if self.isolated_since is None and self.in_majority(world, self.raft_leader):
            for lease, exp in list(self.keys.leases.items()):
                if exp <= world.now:
                    del self.keys.leases[lease]
                    if self.keys.leader is not None and self.keys.leader[2] == lease:
                        self.keys.leader = None

    # ---- the agent's view -------------------------------------------------------------------

    def observe(self, world, node: str, spec_failover) -> CoordObs:
        n = world.nodes[node]
        c = n.coord
        now = world.local(node)
        since = None if c.last_good is None else now - c.last_good
        base = dict(remembered_epoch=c.remembered, held_epoch=c.held[0] if c.held else None,
                    held_lease=c.held[1] if c.held else None, held_revision=c.held[2] if c.held else None,
                    lease=c.lease, since_renewal_s=since, watchdog_armed=c.wd_armed)
        if not self.client_ok(world, node):
            return CoordObs(reachable=False, error="no etcd member with a majority answered", **base)
        k = self.keys
        return CoordObs(reachable=True, epoch=k.epoch,
                        leader=k.leader[0] if k.leader else None, leader_epoch=k.leader[1] if k.leader else None,
                        leader_lease=k.leader[2] if k.leader else None,
                        candidate=k.candidate[0] if k.candidate else None,
                        candidate_epoch=k.candidate[1] if k.candidate else None,
                        last_node=k.acquired[0] if k.acquired else None,
                        last_epoch=k.acquired[1] if k.acquired else None, **base)

    def agent_bookkeeping(self, world, node: str) -> None:
        """What the real agent does after each observation: remember the highest epoch seen, and
        forget a claim that etcd has moved past."""
        c = world.nodes[node].coord
        if not self.client_ok(world, node):
            return
        k = self.keys
        after = claim.observed(_claim(c), k.epoch, k.leader[1] if k.leader else None)
        c.remembered = after.remembered_epoch
        c.held = None if after.held_epoch is None else (after.held_epoch, after.held_lease, after.held_revision)

    # ---- the keeper and the watchdog -------------------------------------------------------

    def keeper_step(self, world, node: str) -> None:
        n = world.nodes[node]
        c = n.coord
        if not n.on or n.paused or c.keeper_stopped:
            return
        now = world.local(node)
        if now - c.heartbeat > HEARTBEAT_MAX_AGE:
            return  # a hung agent loses the lease
        k = self.keys
        if self.stale_ack(world, node):
            if c.lease is None or c.lease not in k.leases:
                return
            # answered by the isolated leader: the node believes it renewed, nothing is extended
        elif self.client_ok(world, node):
            if c.lease is None or c.lease not in k.leases:
                c.lease, k.next_lease = k.next_lease, k.next_lease + 1
            k.leases[c.lease] = world.now + self.ttl
        else:
            return
        c.last_good, c.paused_since_renewal = now, False
        if c.held is not None and c.held[1] == c.lease:
            c.held_good = now
            if c.wd_armed:
                c.wd_fed = now

    def watchdogs(self, world) -> list[str]:
        """Nodes whose watchdog fires now (their clock past the last feed + timeout)."""
        return [name for name, n in world.nodes.items()
                if n.on and not n.paused and n.coord.wd_armed and world.local(name) - n.coord.wd_fed >= self.wd_timeout]

    # ---- transactions (the executor's side of the coordination actions) --------------------

    def acquire(self, world, node: str, revision: str) -> str:
        c, k = world.nodes[node].coord, self.keys
        if not self.client_ok(world, node):
            return "refused: etcd unreachable"
        if k.leader is not None or c.lease is None or c.lease not in k.leases:
            return "refused: compare failed"
        if c.held is not None and c.held[0] != k.epoch:
            return "refused: stale claim"
        k.epoch += 1
        k.leader, k.candidate, k.acquired = (node, k.epoch, c.lease), None, (node, k.epoch)
        self.issued.append((k.epoch, node))
        return "ok"

    def record_claim(self, world, node: str, epoch: int, lease: int, revision: str) -> None:
        """The agent's claim file written after a successful acquisition (a kill in between
        leaves etcd showing an acquisition the agent has no record of)."""
        c = world.nodes[node].coord
        c.held, c.remembered = (epoch, lease, revision), max(c.remembered, epoch)
        c.held_good = c.last_good if lease == c.lease else None

    def holds(self, world, node: str) -> bool:
        c, k = world.nodes[node].coord, self.keys
        return k.leader is not None and k.leader[0] == node and k.leader[2] == c.lease and c.lease in k.leases

    def release(self, world, node: str) -> str:
        if not self.client_ok(world, node) or not self.holds(world, node):
            return "refused: compare failed"
        self.keys.leader = None
        c = world.nodes[node].coord
        after = claim.released(_claim(c))
        c.held = None if after.held_epoch is None else (after.held_epoch, None, None)  # type: ignore[assignment]
        return "ok"

    def publish(self, world, node: str, candidate: str) -> str:
        if not self.client_ok(world, node) or not self.holds(world, node):
            return "refused: compare failed"
        self.keys.candidate = (candidate, self.keys.epoch)
        return "ok"

    def withdraw(self, world, node: str) -> str:
        if not self.client_ok(world, node) or not self.holds(world, node):
            return "refused: compare failed"
        self.keys.candidate = None
        return "ok"

    def snapshot(self) -> None:
        self.snapshots.append(copy.deepcopy(self.keys))

    def restore(self, world, index: int) -> None:
        """etcd restored from an older snapshot: its keys go back; its leases start a full TTL again."""
        if self.snapshots:
            nxt = self.keys.next_lease
            self.keys = copy.deepcopy(self.snapshots[index % len(self.snapshots)])
            self.keys.next_lease = max(nxt, self.keys.next_lease)
            self.keys.leases = {lease: world.now + self.ttl for lease in self.keys.leases}
