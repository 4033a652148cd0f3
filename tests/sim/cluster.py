"""The simulated two-node cluster: world events, faults, agents running the real planner,
and the safety invariants checked after every step."""

from __future__ import annotations

from reconciler.plan.planner import plan
from reconciler.spec import LoadedSpec
from tests.sim.act import execute
from tests.sim.coord import SimEtcd
from tests.sim.observe import connection_state, is_prefix, observe, streaming
from tests.sim.world import Addr, Drbd, Iface, Node, Pg, World, iface


class SimCluster:
    def __init__(self, specs: list[LoadedSpec], fresh: bool = False) -> None:
        self.specs = specs  # every version the operator has written; nodes hold an index
        names = list(specs[0].model.nodes)
        self.world = World(nodes={n: Node(name=n) for n in names})
        for node in self.world.nodes.values():
            node.pg = Pg(empty=fresh and node.name != names[0], wal=[] if fresh and node.name != names[0] else [(1, "init")])
            node.pg.ckpt_lsn = 0 if node.pg.wal else None
            if node.name != names[0] and not fresh:  # an existing standby of the first node
                node.pg.state, node.pg.standby_signal = "shut down in recovery", True
                node.pg.follows = (specs[0].model.nodes[names[0]].address, specs[0].model.postgres.port if specs[0].model.postgres else 5432)
            for r in specs[0].model.drbd:
                node.drbd[r.name] = Drbd(data=["mkfs"])
            for name in specs[0].addresses:
                node.ifaces[name] = Iface()
        self.log: list[str] = []
        f = specs[0].model.failover
        if f.mode == "automatic":
            wd = f.watchdog.timeout_s if f.watchdog != "off" else f.demote_after_s + f.demotion_budget_s
            self.world.etcd = SimEtcd(ttl=f.lease_ttl_s, wd_timeout=wd)

    # ---- agents -------------------------------------------------------------------------

    def spec_of(self, name: str) -> LoadedSpec:
        return self.specs[self.world.nodes[name].spec_version]

    def observe(self, name: str):
        return observe(self.world, self.spec_of(name), self.world.nodes[name])

    def plan_for(self, name: str):
        spec = self.spec_of(name)
        peer_name = spec.model.peer_of(name)
        peer = None
        if peer_name is not None and self.world.channel(name, peer_name):
            peer = observe(self.world, self.specs[self.world.nodes[peer_name].spec_version], self.world.nodes[peer_name])
        return plan(spec, name, self.observe(name), peer)

    def agent_step(self, name: str, limit: int | None = None) -> str:
        node = self.world.nodes[name]
        if not (node.on and node.agent):
            return "down"
        if self.world.etcd is not None:  # the agent's heartbeat, and what it remembers of etcd
            node.coord.heartbeat = self.world.local(name)
            self.world.etcd.agent_bookkeeping(self.world, name)
        p = self.plan_for(name)
        a = p.next_action
        if a is None:
            return "converged"
        if a.blocked:
            return "blocked"
        result = execute(self.world, self.spec_of(name), node, a, limit)
        self.log.append(f"{name}: {a.kind.value} {a.target} -> {result}")
        if limit is not None:
            node.agent = False  # killed part-way; restarted by a later event
        return result

    # ---- the world moving on its own ---------------------------------------------------

    def replicate(self) -> None:
        for node in self.world.nodes.values():
            src = streaming(self.world, self.spec_of(node.name), node)
            if src is not None:
                node.pg.wal = list(src.pg.wal)
                node.pg.history = list(src.pg.history)
        for r in self.specs[0].model.drbd:
            self._drbd_connect(r.name)

    def _drbd_connect(self, res: str) -> None:
        a, b = self.world.nodes.values()
        if not (res in a.drbd and res in b.drbd and a.drbd[res].configured and b.drbd[res].configured):
            return
        if connection_state(self.world, a, res) != "Connected":
            return
        da, db = a.drbd[res], b.drbd[res]
        da.peer_fenced = db.peer_fenced = False
        if da.data == db.data:
            return
        both_primary = da.role == db.role == "Primary"
        if not both_primary and is_prefix(da.data, db.data) and da.role != "Primary":
            da.data = list(db.data)
        elif not both_primary and is_prefix(db.data, da.data) and db.role != "Primary":
            db.data = list(da.data)
        else:
            for d in (da, db):
                d.standalone = d.split_brain = True

    def client_write(self) -> None:
        """A client commits through the first floating address, and writes a file."""
        spec = self.specs[-1]
        vip = next((a for addrs in spec.addresses.values() for a in addrs), None)
        for node in self.world.nodes.values():
            if not node.on:
                continue
            holds = vip is None or any(a.address.split("/")[0] == vip.ip for i in node.ifaces.values() for a in i.addresses)
            pg = node.pg
            if holds and "settling" not in node.blind and pg.running and not pg.standby and spec.model.postgres is not None:
                t = self.world.token("c")
                pg.wal.append((pg.tli, t))
                if self._commit_confirmed(node):
                    self.world.acked_commits.append(t)
            for r in spec.model.drbd:
                d = node.drbd.get(r.name)
                if d and d.role == "Primary" and r.mount in node.mounts and any(node.services.values()):
                    connected = connection_state(self.world, node, r.name) == "Connected"
                    if self.world.etcd is not None and not connected and not d.peer_fenced:
                        continue  # fencing resource-and-stonith: IO frozen until the fence-peer handler succeeds
                    t = self.world.token("f")
                    d.data.append(t)
                    peer = self.world.peer(node.name).drbd.get(r.name)
                    if connection_state(self.world, node, r.name) == "Connected" and peer:
                        peer.data = list(d.data)
                    self.world.acked_files.setdefault(r.name, []).append(t)

    def _commit_confirmed(self, node: Node) -> bool:
        """A commit returns once every synchronous standby has it (synchronous_standby_names):
        those streaming from here receive it now; without one streaming it waits (unacknowledged)."""
        names = node.pg.sync_names
        if not names:
            return True
        spec = self.spec_of(node.name)
        standbys = [n for n in self.world.nodes.values() if n.name in names and streaming(self.world, spec, n) is node]
        for n in standbys:
            n.pg.wal = list(node.pg.wal)
            n.pg.history = list(node.pg.history)
        return bool(standbys)

    # ---- automatic mode: time, the keeper, the watchdog, the fence-peer handler ----------------

    def tick(self, dt: float, renew: bool) -> None:
        w = self.world
        assert w.etcd is not None
        w.now += dt
        self.settle()
        if renew:
            for name in w.nodes:
                w.etcd.keeper_step(w, name)

    def settle(self) -> None:
        w = self.world
        assert w.etcd is not None
        before = dict(w.etcd.keys.leases)
        w.etcd.settle(w)
        for lease in set(before) - set(w.etcd.keys.leases):
            for name, n in w.nodes.items():
                c = n.coord
                if c.held is None or c.held[1] != lease or c.held_good is None or c.paused_since_renewal:
                    continue
                sent = c.held_good + n.clock_lag  # real time of the last answered keepalive of that lease
                if n.on and (c.wd_armed or self._writable(n)) and w.now < sent + w.etcd.wd_timeout:
                    w.violations.append(f"the lease of {name} expired on the server at {w.now:g} s, before its "
                                        f"own deadline ({sent:g} s + watchdog {w.etcd.wd_timeout:g} s)")
        for name in w.etcd.watchdogs(w):
            self.log.append(f"{name}: watchdog reset")
            self.power_off(name)
            self.power_on(name)

    def pause(self, name: str, dt: float) -> None:
        """The whole machine stops for `dt` (a paused VM): its clock too; the others go on."""
        n = self.world.nodes[name]
        n.paused = True
        n.clock_lag += dt
        n.coord.paused_since_renewal = True
        self.tick(dt, renew=False)
        n.paused = False
        self.settle()

    def fence_peer_handler(self, name: str) -> None:
        """DRBD calls the handler on a Primary that lost its peer: it withdraws the candidate under
        this node's lease and then lets IO go on; it fails (IO stays frozen) when it cannot."""
        w, node = self.world, self.world.nodes[name]
        if w.etcd is None or not node.on:
            return
        for r, d in node.drbd.items():
            if d.configured and d.role == "Primary" and connection_state(w, node, r) != "Connected" and not d.peer_fenced:
                if w.etcd.withdraw(w, name) == "ok":
                    d.peer_fenced = True

    def _pg_acks(self, n: Node) -> bool:
        """Its PostgreSQL would acknowledge a commit now (automatic mode: synchronous replication)."""
        if not (n.pg.running and not n.pg.standby):
            return False
        spec = self.spec_of(n.name)
        return not n.pg.sync_names or any(o.name in n.pg.sync_names and streaming(self.world, spec, o) is n
                                          for o in self.world.nodes.values())

    def _drbd_acks(self, n: Node, res: str) -> bool:
        """A write on its DRBD Primary would complete now: connected to a Secondary, or cut off with
        the fence-peer handler having succeeded (else IO is frozen)."""
        d = n.drbd[res]
        if not (d.configured and d.role == "Primary"):
            return False
        if connection_state(self.world, n, res) == "Connected":
            return self.world.peer(n.name).drbd[res].role != "Primary"
        return d.peer_fenced

    def _acks(self, n: Node) -> bool:
        return self._pg_acks(n) or any(self._drbd_acks(n, r) for r in n.drbd)

    @staticmethod
    def _writable(n: Node) -> bool:
        return (n.pg.running and not n.pg.standby) or any(d.configured and d.role == "Primary" for d in n.drbd.values())

    # ---- faults -------------------------------------------------------------------------

    def power_off(self, name: str) -> None:
        node = self.world.nodes[name]
        self.pg_crash(name)
        node.on = node.agent = False
        node.coord.lease = node.coord.last_good = node.coord.held_good = None  # the keeper is gone; the state file stays
        node.coord.wd_armed = node.coord.keeper_stopped = node.paused = False
        for d in node.drbd.values():
            d.configured, d.role, d.standalone = False, "Secondary", False
        node.mounts.clear()
        node.services = {k: False for k in node.services}
        for i in node.ifaces.values():
            i.addresses = [a for a in i.addresses if not a.owned]
            i.promote_secondaries = False
        self._topology_changed()

    def power_on(self, name: str) -> None:
        node = self.world.nodes[name]
        node.on = node.agent = True
        self._topology_changed()

    def _topology_changed(self) -> None:
        """etcd sees a member go or come at once: a raft leader that lost its majority starts its
        short stale-answer window now, not at the next tick (found by the long profile: a leader
        isolated by a power-off, noticed only after a 12 s pause, answered a keepalive 12 s late)."""
        if self.world.etcd is not None:
            self.settle()

    def pg_crash(self, name: str) -> None:
        pg = self.world.nodes[name].pg
        if pg.running:
            pg.running = False
            pg.state = "in archive recovery" if pg.standby else "in production"

    def drift_remove_ip(self, name: str, index: int) -> None:
        owned = [(i, a) for i in self.world.nodes[name].ifaces.values() for a in i.addresses if a.owned]
        if owned:
            iface, a = owned[index % len(owned)]
            iface.delete(a.address)

    def drift_add_foreign(self, name: str, index: int) -> None:
        node = self.world.nodes[name]
        if node.ifaces:
            iface = next(iter(node.ifaces.values()))
            addr = f"192.168.77.{index % 250 + 1}/32"
            if all(a.address != addr for a in iface.addresses):
                iface.addresses.append(Addr(addr, False))

    def operator_resolve_split_brain(self) -> None:
        """What the plan tells the operator to run: the non-Primary side discards its data."""
        spec = self.specs[-1]
        survivor = spec.model.primary
        for r in spec.model.drbd:
            nodes = list(self.world.nodes.values())
            if any(n.drbd[r.name].split_brain for n in nodes) and survivor != "none":
                win = self.world.nodes[survivor].drbd[r.name]
                for n in nodes:
                    d = n.drbd[r.name]
                    if n.name != survivor and d.role != "Primary":
                        d.data = list(win.data)
                    d.standalone = d.split_brain = False

    def operator_reclone(self) -> None:
        """What the plan tells the operator when a node needs re-cloning: move its data
        directory aside and leave an empty one (the agent then clones into it)."""
        for name, node in self.world.nodes.items():
            if not node.on or node.pg.running:
                continue
            p = self.plan_for(name)
            if any(g.name == "target_empty" and not g.holds for a in p.actions for g in a.guards):
                node.pg = type(node.pg)(empty=True)

    # ---- safety ---------------------------------------------------------------------------

    def check_safety(self) -> list[str]:
        w = self.world
        out = list(w.violations)
        on = [n for n in w.nodes.values() if n.on]
        auto = w.etcd is not None
        # In automatic mode a node counts as Primary only where it can still get a write
        # acknowledged: a machine paused past its lease wakes up Primary everywhere, but its
        # commits wait for a synchronous standby that follows someone else and DRBD froze its IO
        # (fencing resource-and-stonith) until a fence-peer handler that no longer holds the key
        # fails; it demotes itself at its next step.
        for r in self.specs[-1].model.drbd:
            prim = [n.name for n in on if n.drbd.get(r.name) and n.drbd[r.name].configured and n.drbd[r.name].role == "Primary"
                    and (not auto or self._drbd_acks(n, r.name))]
            if len(prim) > 1:
                out.append(f"both DRBD Primary on {r.name}")
        serving = [n for n in on if not auto or self._acks(n)]
        both = [s.name for s in self.specs[-1].model.services if len(serving) == 2 and all(n.services.get(s.name) for n in serving)]
        if both:
            out.append(f"service {both[0]} runs on both nodes")
        writable = [n for n in on if n.pg.running and not n.pg.standby and (not auto or self._pg_acks(n))]
        if len(writable) > 1:
            out.append("both PostgreSQL writable")
        floating = {iface(a.text).ip for s in self.specs for a in s.all_addresses}
        held = [{iface(a.address).ip for i in n.ifaces.values() for a in i.addresses} & floating for n in on]
        # Restated (issue 14): one address may be on both nodes only while one of them serves
        # nothing (PostgreSQL stopped, no service running): a client then reaches either a
        # server or a refusal, never two servers (plan/handover.py).
        idle = [_serves_nothing(n) or (auto and not self._acks(n)) for n in on]
        if len(held) == 2 and held[0] & held[1] and not any(idle):
            out.append(f"floating address on both nodes, both serving: {sorted(map(str, held[0] & held[1]))[:3]}")
        if w.etcd is not None:
            out += self._automatic_safety(on)
        if not w.fenced_ever:
            for n in writable:
                tokens = {t for _, t in n.pg.wal}
                lost = [c for c in w.acked_commits if c not in tokens]
                if lost:
                    out.append(f"{n.name} is writable but lacks acknowledged commits {lost[:3]}")
        return out

    def _automatic_safety(self, on: list[Node]) -> list[str]:
        """The reference's invariants that hold at every moment (the others are checked where the
        action runs: tests/sim/act.py, and at lease expiry: `settle`)."""
        w, out = self.world, []
        assert w.etcd is not None
        k = w.etcd.keys
        for n in on:
            c = n.coord
            if not self._writable(n) or w.etcd.holds(w, n.name) or c.paused_since_renewal:
                continue
            claim_alive = c.held is not None and c.held[1] in k.leases
            within = c.held_good is not None and w.local(n.name) - c.held_good < w.etcd.wd_timeout
            if not (claim_alive or within):
                out.append(f"{n.name} is writable without the leader key, its lease ended and past its watchdog deadline")
        behind = k.epoch < max(n.coord.remembered for n in w.nodes.values())  # restored: refused by both agents
        if not behind and k.leader is not None and k.candidate is not None and k.candidate[1] == k.leader[1]:
            holder = w.nodes[k.leader[0]]
            if holder.on and holder.pg.running and not holder.pg.standby and k.candidate[0] not in holder.pg.sync_names:
                out.append(f"{k.candidate[0]} is the candidate but {holder.name} does not replicate to it synchronously")
        epochs = [e for e, _ in w.etcd.issued]
        if epochs != sorted(set(epochs)):
            out.append(f"epochs handed out twice or out of order: {epochs[-4:]}")
        return out


def _serves_nothing(n: Node) -> bool:
    """The node answers no client: PostgreSQL not running and no service running."""
    return not n.pg.running and not any(n.services.values())
