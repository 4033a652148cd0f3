"""Property tests of automatic failover: two agents running the real planner, three etcd members,
lease keepers and watchdogs, all simulated (tests/sim/coord.py), under faults and races.

Beyond the manual machine's faults (agent killed part-way, PostgreSQL crash, link and channel
cut, power loss, driver failures) this one moves time (with or without the keepers renewing),
pauses a whole node (its clock stops), stops a keeper, stops etcd members, cuts either node
from the witness, runs DRBD's fence-peer handler, restores etcd from an older snapshot, and
has the operator edit the preferred Primary (each edit a new revision) or declare a node
fenced.  Safety after every step: the manual invariants (never two writable, never an
acknowledged commit or write lost unless the operator declared a node fenced, never an
address served twice) and the reference's seven (tests/sim/cluster.py `_automatic_safety`,
tests/sim/act.py `_check_automatic`, lease expiry in `SimCluster.settle`).  Liveness in
teardown: once every fault is healed one node holds the key and serves, the other is its
synchronous standby and the published candidate.

Profiles as in test_sim_properties (`ci` 2,000 examples, `long` 50,000).
"""

from __future__ import annotations

import copy

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from reconciler.plan.actions import Plan
from reconciler.plan.kinds import Kind
from tests.sim.cluster import SimCluster
from tests.sim.coord import WITNESS
from tests.sim.observe import streaming
from tests.sim.specs import make_spec
from tests.sim.world import Addr
from tests.test_sim_properties import NODES  # also loads the settings profile

LIVENESS_ROUNDS = 60
_SETTLED: dict[tuple[str, bool, bool], SimCluster] = {}


class AutoCluster(RuleBasedStateMachine):
    watchdog = True  # `watchdog: off` in the spec when False

    @initialize(drbd=st.booleans(), base=st.booleans(), settled=st.sampled_from((True, True, False)))
    def start(self, drbd: bool, base: bool, settled: bool) -> None:
        """`settled`: the cluster first runs healthy until it has converged (mx1 holding the key,
        mx2 its synchronous candidate): most races worth finding start from there."""
        self.flags = {"drbd": drbd}
        self.fenced: tuple[str, ...] = ()
        self.restored = False  # etcd was restored from a snapshot: what it recorded may be gone
        key = (type(self).__name__, drbd, base)
        if settled and key in _SETTLED:  # the same 25 s of healthy running every time: copied
            done = _SETTLED[key]
            self.c = copy.deepcopy(done, memo={id(s): s for s in done.specs})
            return
        self.c = SimCluster([make_spec("mx1", drbd=drbd, automatic=True, watchdog=self.watchdog)])
        if base:
            self.c.world.nodes["mx2"].ifaces["eth0"].addresses.append(Addr("10.9.0.2/24", False))
        for name in NODES:  # the keepers start with the agents
            self.c.world.etcd.keeper_step(self.c.world, name)  # type: ignore[union-attr]
        if settled:
            self.world_runs(seconds=25, agents="both")
            _SETTLED[key] = copy.deepcopy(self.c, memo={id(s): s for s in self.c.specs})

    def _spec(self, primary: str) -> None:
        self.c.specs.append(make_spec(primary, fenced=self.fenced, automatic=True, rev=len(self.c.specs),
                                      watchdog=self.watchdog, **self.flags))

    # ---- agents, keepers, time -----------------------------------------------------------------
    @rule(node=st.sampled_from(NODES))
    def agent(self, node: str) -> None:
        self.c.agent_step(node)

    @rule(node=st.sampled_from(NODES), steps=st.integers(2, 8))
    def agent_runs(self, node: str, steps: int) -> None:
        for _ in range(steps):
            if self.c.agent_step(node) in ("down", "converged", "blocked"):
                return
            self.safe()

    @rule(node=st.sampled_from(NODES), limit=st.integers(0, 3))
    def agent_killed_mid_action(self, node: str, limit: int) -> None:
        self.c.agent_step(node, limit=limit)

    @rule(node=st.sampled_from(NODES))
    def agent_restart(self, node: str) -> None:
        n = self.c.world.nodes[node]
        n.agent = n.on

    @rule(node=st.sampled_from(NODES))
    def keeper(self, node: str) -> None:
        self.c.world.etcd.keeper_step(self.c.world, node)  # type: ignore[union-attr]

    @rule(node=st.sampled_from(NODES), stopped=st.booleans())
    def keeper_sigstop(self, node: str, stopped: bool) -> None:
        self.c.world.nodes[node].coord.keeper_stopped = stopped

    @rule(dt=st.sampled_from((0.5, 1.0, 2.0, 4.0, 8.0)), renew=st.booleans())
    def time_passes(self, dt: float, renew: bool) -> None:
        self.c.tick(dt, renew)

    @rule(node=st.sampled_from(NODES), dt=st.sampled_from((2.0, 5.0, 12.0)))
    def node_paused(self, node: str, dt: float) -> None:
        if self.c.world.nodes[node].on:
            self.c.pause(node, dt)

    @rule(seconds=st.sampled_from((1, 3, 8, 15, 25)), agents=st.sampled_from(("both", "both", "mx1", "mx2", "none")))
    def world_runs(self, seconds: int, agents: str) -> None:
        """Time goes on second by second with whatever faults are in place: the keepers renew when
        they can, the chosen agents act, replication streams, the client writes, DRBD calls its
        fence-peer handler.  A takeover needs a lease to run out: this is how the search gets there."""
        c = self.c
        for _ in range(seconds):
            c.tick(1.0, renew=True)
            for name in NODES:
                if agents in ("both", name):
                    for _ in range(3):
                        if c.agent_step(name) in ("down", "converged", "blocked"):
                            break
                        self.safe()
                c.fence_peer_handler(name)
            c.replicate()
            c.client_write()
            self.safe()

    @rule(how=st.sampled_from(("cut", "power", "agent", "keeper", "pause", "etcd")),
          seconds=st.sampled_from((3, 8, 15, 25)))
    def holder_fails(self, how: str, seconds: int) -> None:
        """Whoever holds the key now fails one way, and the world runs on (both agents, if alive):
        cut from the peer and the witness, powered off, its agent hung, its keeper stopped, the
        whole machine paused for longer than the TTL, or its etcd member down and the witness cut."""
        w = self.c.world
        k = w.etcd.keys  # type: ignore[union-attr]
        if k.leader is None:
            return
        h = k.leader[0]
        if how == "cut":
            w.link_up = False
            w.etcd.wit_cut.add(h)  # type: ignore[union-attr]
            self.c.settle()
        elif how == "power":
            self.c.power_off(h)
        elif how == "agent":
            w.nodes[h].agent = False
        elif how == "keeper":
            w.nodes[h].coord.keeper_stopped = True
        elif how == "pause":
            self.c.pause(h, 12.0)
        else:
            w.etcd.down.add(h)  # type: ignore[union-attr]
            w.etcd.wit_cut.add(h)  # type: ignore[union-attr]
            self.c.settle()
        self.world_runs(seconds=seconds, agents="both")

    @rule()
    def replicate(self) -> None:
        self.c.replicate()

    @rule()
    def write(self) -> None:
        self.c.client_write()

    @rule(node=st.sampled_from(NODES))
    def fence_peer_handler(self, node: str) -> None:
        self.c.fence_peer_handler(node)

    # ---- etcd and the network ---------------------------------------------------------------------
    @rule(member=st.sampled_from((*NODES, WITNESS)), up=st.booleans())
    def etcd_member(self, member: str, up: bool) -> None:
        etcd = self.c.world.etcd
        assert etcd is not None
        (etcd.down.discard if up else etcd.down.add)(member)
        self.c.settle()

    @rule(node=st.sampled_from(NODES), cut=st.booleans())
    def witness_link(self, node: str, cut: bool) -> None:
        etcd = self.c.world.etcd
        assert etcd is not None
        (etcd.wit_cut.add if cut else etcd.wit_cut.discard)(node)
        self.c.settle()

    @rule(up=st.booleans())
    def link(self, up: bool) -> None:
        self.c.world.link_up = up
        self.c.settle()

    @rule(up=st.booleans())
    def channel(self, up: bool) -> None:
        self.c.world.channel_up = up

    @rule()
    def etcd_snapshot(self) -> None:
        self.c.world.etcd.snapshot()  # type: ignore[union-attr]

    @precondition(lambda self: self.c.world.etcd.snapshots and all(
        n.on and n.agent and n.coord.remembered == self.c.world.etcd.keys.epoch for n in self.c.world.nodes.values()))
    @rule(i=st.integers(0, 5))
    def etcd_restored_from_snapshot(self, i: int) -> None:
        """An operator restores etcd from an older snapshot, on a running cluster whose two agents
        have both seen the latest epoch (the agents' memory is the protection: one that never saw
        the later epoch, with the other unreachable, cannot know), and then deletes the `candidate`
        key as docs/automatic-failover.md says (a snapshot of the current epoch can hold a
        candidate withdrawn since: no epoch tells them apart; the holder republishes it)."""
        etcd = self.c.world.etcd
        assert etcd is not None
        etcd.restore(self.c.world, i)
        etcd.keys.candidate = None
        self.restored = True

    # ---- faults on the nodes ----------------------------------------------------------------------
    @rule(node=st.sampled_from(NODES))
    def pg_crash(self, node: str) -> None:
        self.c.pg_crash(node)

    @rule(node=st.sampled_from(NODES), on=st.booleans())
    def power(self, node: str, on: bool) -> None:
        n = self.c.world.nodes[node]
        if on and not n.on:
            self.c.power_on(node)
        elif not on and n.on:
            self.c.power_off(node)
        self.c.settle()

    @rule(node=st.sampled_from(NODES), part=st.sampled_from(("net", "drbd", "postgres", "services", "settling")))
    def unobservable(self, node: str, part: str) -> None:
        self.c.world.nodes[node].blind.add(part)

    @rule(node=st.sampled_from(NODES))
    def observable_again(self, node: str) -> None:
        self.c.world.nodes[node].blind.clear()

    # ---- the operator -----------------------------------------------------------------------------
    @rule(primary=st.sampled_from(NODES), reach=st.sampled_from(("both", "mx1", "mx2")))
    def edit_spec(self, primary: str, reach: str) -> None:
        """A new revision preferring `primary` (a planned switchover when another node holds the key)."""
        if primary in self.fenced:
            primary = next(n for n in NODES if n not in self.fenced)
        self._spec(primary)
        for n in NODES if reach == "both" else (reach,):
            self.c.world.nodes[n].spec_version = len(self.c.specs) - 1

    @rule(node=st.sampled_from(NODES))
    def spec_reaches(self, node: str) -> None:
        self.c.world.nodes[node].spec_version = len(self.c.specs) - 1

    @precondition(lambda self: not self.fenced)
    @rule(node=st.sampled_from(NODES))
    def operator_fences(self, node: str) -> None:
        """The operator powers `node` off and declares it fenced (consenting to lose what only it had)."""
        self.c.power_off(node)
        self.fenced = (node,)
        self.c.world.fenced_ever = True
        self._spec(next(n for n in NODES if n != node))
        for n in NODES:
            self.c.world.nodes[n].spec_version = len(self.c.specs) - 1

    # ---- properties -------------------------------------------------------------------------------
    @invariant()
    def safe(self) -> None:
        if hasattr(self, "c"):
            v = self.c.check_safety()
            assert not v, f"safety violated: {v}\nrecent actions: {self.c.log[-14:]}"

    def teardown(self) -> None:
        if hasattr(self, "c"):
            event(f"takeovers before healing: {min(len(self.c.world.etcd.issued) - 1, 3)}")  # type: ignore[union-attr]
            assert_automatic_converges(self)


def heal(m: AutoCluster) -> None:
    c, w = m.c, m.c.world
    assert w.etcd is not None
    w.link_up = w.channel_up = True
    w.etcd.down.clear()
    w.etcd.wit_cut.clear()
    for n in w.nodes.values():
        n.on = n.agent = True
        n.coord.keeper_stopped = False
        n.spec_version = len(c.specs) - 1
        n.blind.clear()
    seen = max(n.coord.remembered for n in w.nodes.values())
    if w.etcd.keys.epoch < seen:  # the operator repairs an etcd that went back (what the plan asks for)
        w.etcd.keys.epoch = seen
    c.settle()


def operator_consents(m: AutoCluster) -> None:
    """What the plans ask of the operator: re-clone an empty target, or declare a diverged node
    fenced (with the current holder preferred, so that this is no switchover), or, when nobody
    holds the key and neither node may take it, declare one of them fenced."""
    c = m.c
    c.operator_resolve_split_brain()
    c.operator_reclone()
    k = c.world.etcd.keys  # type: ignore[union-attr]
    # only after a restore: without one, etcd or a node's claim always shows who wrote last
    if m.restored and k.leader is None and all(_asks_to_fence_the_peer(c.plan_for(n)) for n in NODES):
        _operator_picks_a_primary(m)
        return
    for name in NODES:
        p = c.plan_for(name)
        if any(g.name == "declared_fenced" and not g.holds for a in p.actions for g in a.guards) and k.leader:
            if name not in m.fenced and k.leader[0] != name:
                m.fenced = (name,)
                c.world.fenced_ever = True
                m._spec(k.leader[0])
                for n in NODES:
                    c.world.nodes[n].spec_version = len(c.specs) - 1


def _asks_to_fence_the_peer(p: Plan) -> bool:
    """The plan's acquisition waits on `eligible` only: the node may lack commits the last
    holder acknowledged, and only the operator's `fenced: [peer]` lets it take over."""
    return any(a.kind is Kind.COORD_ACQUIRE and [g.name for g in a.guards if not g.holds] == ["eligible"]
               for a in p.actions)


def _operator_picks_a_primary(m: AutoCluster) -> None:
    """Nobody can tell from etcd who wrote last (a double fault erased what it recorded: an
    agent killed between its acquisition and its claim, then etcd restored from a snapshot
    older than that acquisition).  The operator, who can look at both nodes, keeps the one
    with every acknowledged commit and the most WAL and declares the other fenced."""
    w = m.c.world

    def rank(n: str) -> tuple[bool, int, bool]:
        tokens = {t for _, t in w.nodes[n].pg.wal}
        return all(t in tokens for t in w.acked_commits), len(w.nodes[n].pg.wal), n == m.c.specs[-1].model.primary

    keep = max(NODES, key=rank)
    m.fenced = (next(n for n in NODES if n != keep),)
    w.fenced_ever = True
    m._spec(keep)
    for n in NODES:
        w.nodes[n].spec_version = len(m.c.specs) - 1


def assert_automatic_converges(m: AutoCluster) -> None:
    c, w = m.c, m.c.world
    heal(m)
    for _ in range(LIVENESS_ROUNDS):
        operator_consents(m)
        c.tick(1.0, renew=True)
        for name in NODES:
            c.agent_step(name)
            c.replicate()
            c.client_write()
            c.fence_peer_handler(name)
            v = c.check_safety()
            assert not v, f"safety violated while converging: {v}\n{c.log[-14:]}"
    k = w.etcd.keys  # type: ignore[union-attr]
    plans = {name: c.plan_for(name) for name in NODES}
    left = {n: [(a.kind.value, a.target, a.waiting_on) for a in p.actions] for n, p in plans.items() if p.actions}
    assert k.leader is not None, f"nobody holds the leader key after healing: {left}\n{c.log[-16:]}"
    assert not left, f"not converged after {LIVENESS_ROUNDS} rounds: {left}\nrecent actions: {c.log[-16:]}"
    holder, spec = k.leader[0], c.specs[-1]
    other = next(n for n in NODES if n != holder)
    h, o = w.nodes[holder], w.nodes[other]
    assert {a.address for i in h.ifaces.values() for a in i.addresses if a.owned} == {a.text for a in spec.all_addresses}
    assert h.pg.running and not h.pg.standby and all(h.services.values())
    assert all(d.role == "Primary" for d in h.drbd.values() if d.configured)
    assert not any(a.owned for i in o.ifaces.values() for a in i.addresses) and not any(o.services.values())
    assert streaming(w, spec, o) is h, f"{other} is not streaming from {holder}"
    assert k.candidate == (other, k.leader[1]), f"{other} is not the published candidate: {k.candidate}"


TestAutoCluster = AutoCluster.TestCase


def test_found_by_the_long_profile_a_leader_isolated_by_a_power_off_answers_no_keepalive_later() -> None:
    """Found by the long profile (unseeded, ~9,500 examples): the witness down, mx2 powered off by
    the operator (fenced), then mx1 paused 12 s: mx1's etcd member, the raft leader, had lost its
    majority at the power-off, but the simulator noticed only at the next tick, after the pause,
    and its keeper got a stale keepalive answer 12 s late; the lease then expired on the server
    before the deadline mx1 derived from that answer.  The simulator now notices at once."""
    m = AutoCluster()
    m.start(drbd=False, base=False, settled=True)
    for step in (lambda: m.etcd_member(member="wit", up=False), lambda: m.world_runs(agents="both", seconds=3),
                 lambda: m.operator_fences(node="mx2"), lambda: m.node_paused(dt=12.0, node="mx1"),
                 lambda: m.keeper(node="mx1"), lambda: m.power(node="mx2", on=True)):
        step()
        m.safe()
    assert_automatic_converges(m)


def test_found_by_the_long_profile_the_candidate_is_published_only_once_on_the_holders_timeline() -> None:
    """Found by the long profile (unseeded, ~12,000 examples): from an unsettled start mx1
    acquires, mx2 streams from mx1 while both are standbys, mx1 promotes to timeline 2 and at
    once sees mx2 `sync` (it streamed before the promotion) — published then, mx2 could take
    over from timeline 1 and fork a second timeline 2, which no automatic step may resolve.
    The holder publishes only once the peer has flushed past the start of its timeline."""
    m = AutoCluster()
    m.start(drbd=False, base=False, settled=False)
    w = m.c.world
    for step in (lambda: m.agent_runs(node="mx1", steps=3), lambda: m.agent_runs(node="mx2", steps=5),
                 lambda: m.pg_crash(node="mx1"), lambda: m.agent_runs(node="mx1", steps=5)):
        step()
        m.safe()
    k = w.etcd.keys  # type: ignore[union-attr]
    if k.candidate == ("mx2", 1):  # published: mx2 must already be on mx1's timeline
        assert w.nodes["mx2"].pg.tli == w.nodes["mx1"].pg.tli, "published a candidate still on the old timeline"
    m.holder_fails(how="cut", seconds=25)
    m.safe()
    assert_automatic_converges(m)


def test_an_acquisition_whose_claim_was_never_written_leaves_its_node_eligible() -> None:
    """Found by review: the agent killed between the acquiring transaction and its claim file.
    Its lease runs out with the key; etcd's epoch is then one that no agent remembers holding, no
    candidate is published at it, and nobody would be eligible without an operator.  etcd's own
    record of that acquisition (PREFIX/acquired, written in the same transaction) makes the node
    that made it eligible again: nobody else can have written since."""
    m = AutoCluster()
    m.start(drbd=False, base=False, settled=True)
    w, c = m.c.world, m.c
    w.link_up = False  # mx1 cut from mx2 and the witness: mx2, the candidate, is about to acquire
    w.etcd.wit_cut.add("mx1")  # type: ignore[union-attr]
    c.settle()
    for _ in range(80):
        c.tick(1.0, renew=True)
        c.agent_step("mx1")
        a = c.plan_for("mx2").next_action
        if a is not None and a.kind.value == "coord_acquire" and not a.blocked:
            break
        c.agent_step("mx2")
    c.agent_step("mx2", limit=1)  # the transaction, not the claim file
    k = w.etcd.keys  # type: ignore[union-attr]
    assert k.leader is not None and k.leader[0] == "mx2" and w.nodes["mx2"].coord.held is None
    m.agent_restart(node="mx2")
    m.safe()
    assert_automatic_converges(m)
