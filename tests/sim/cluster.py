"""The simulated two-node cluster: world events, faults, agents running the real planner,
and the safety invariants checked after every step."""

from __future__ import annotations

import ipaddress

from reconciler.plan.planner import plan
from reconciler.spec import LoadedSpec
from tests.sim.act import execute
from tests.sim.observe import connection_state, is_prefix, observe, streaming
from tests.sim.world import Addr, Drbd, Iface, Node, Pg, World


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
            for iface in specs[0].addresses:
                node.ifaces[iface] = Iface()
        self.log: list[str] = []

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
                self.world.acked_commits.append(t)
            for r in spec.model.drbd:
                d = node.drbd.get(r.name)
                if d and d.role == "Primary" and r.mount in node.mounts and any(node.services.values()):
                    t = self.world.token("f")
                    d.data.append(t)
                    peer = self.world.peer(node.name).drbd.get(r.name)
                    if connection_state(self.world, node, r.name) == "Connected" and peer:
                        peer.data = list(d.data)
                    self.world.acked_files.setdefault(r.name, []).append(t)

    # ---- faults -------------------------------------------------------------------------

    def power_off(self, name: str) -> None:
        node = self.world.nodes[name]
        self.pg_crash(name)
        node.on = node.agent = False
        for d in node.drbd.values():
            d.configured, d.role, d.standalone = False, "Secondary", False
        node.mounts.clear()
        node.services = {k: False for k in node.services}
        for i in node.ifaces.values():
            i.addresses = [a for a in i.addresses if not a.owned]
            i.promote_secondaries = False

    def power_on(self, name: str) -> None:
        node = self.world.nodes[name]
        node.on = node.agent = True

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
        for r in self.specs[-1].model.drbd:
            prim = [n.name for n in on if n.drbd.get(r.name) and n.drbd[r.name].configured and n.drbd[r.name].role == "Primary"]
            if len(prim) > 1:
                out.append(f"both DRBD Primary on {r.name}")
        both = [s.name for s in self.specs[-1].model.services if len(on) == 2 and all(n.services.get(s.name) for n in on)]
        if both:
            out.append(f"service {both[0]} runs on both nodes")
        writable = [n for n in on if n.pg.running and not n.pg.standby]
        if len(writable) > 1:
            out.append("both PostgreSQL writable")
        floating = {ipaddress.ip_interface(a.text).ip for s in self.specs for a in s.all_addresses}
        held = [{ipaddress.ip_interface(a.address).ip for i in n.ifaces.values() for a in i.addresses} & floating for n in on]
        # Restated (issue 14): one address may be on both nodes only while one of them serves
        # nothing (PostgreSQL stopped, no service running): a client then reaches either a
        # server or a refusal, never two servers (plan/handover.py).
        if len(held) == 2 and held[0] & held[1] and not any(_serves_nothing(n) for n in on):
            out.append(f"floating address on both nodes, both serving: {sorted(map(str, held[0] & held[1]))[:3]}")
        if not w.fenced_ever:
            for n in writable:
                tokens = {t for _, t in n.pg.wal}
                lost = [c for c in w.acked_commits if c not in tokens]
                if lost:
                    out.append(f"{n.name} is writable but lacks acknowledged commits {lost[:3]}")
        return out


def _serves_nothing(n: Node) -> bool:
    """The node answers no client: PostgreSQL not running and no service running."""
    return not n.pg.running and not any(n.services.values())
