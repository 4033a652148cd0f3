"""Automatic failover on real components: three network namespaces for the machines (two nodes and
a witness), three real etcd 3.4 members, a real PostgreSQL 15 per node, the real agents, and a
client committing through the floating address from a fourth namespace.

Every case runs with a monitor that samples both nodes every 50 ms and asserts, at the end, that
never were both nodes able to acknowledge a commit (PostgreSQL writable *and* not waiting for a
synchronous standby that follows someone else: the client's commit would hang, never return), and
that every commit the client saw acknowledged is on the node that is Primary at the end.

The cases share one cluster (building it takes ~10 s) and run in order; each starts from the
steady state it names (a holder serving, its peer the synchronous, published candidate).
The namespaces have no watchdog (this machine's kernel has none): the spec says `watchdog: off`,
and the frozen-agent case shows what that costs (see `test_agent_then_postmaster_frozen`).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from demo.auto_cluster import AutoTwoNode, hook_runs
from demo.cluster import NODES, VIP, in_ns, wait_for
from reconciler.pgrun import postmaster
from tests.conftest import need_etcd, need_postgres
from tests.test_integration import Writer, holds, rows_on

pytestmark = pytest.mark.slow

OTHER = {"mx1": "mx2", "mx2": "mx1"}
QUIET_S = 15.0  # longer than the lease TTL (10 s): anything that would happen has happened


class Monitor:
    """Samples each node: does its PostgreSQL accept writes, and would a commit be acknowledged
    (synchronous_standby_names empty, or the named standby streaming from it right now)?"""

    def __init__(self, c: AutoTwoNode) -> None:
        self.c = c
        self.both: list[tuple[float, dict[str, str]]] = []
        self.seen: dict[str, int] = {n: 0 for n in NODES}
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _state(self, node: str) -> str:
        try:
            with psycopg.connect(host=os.path.join(self.c.root, node, "sock"), port=5432, user="postgres",
                                 dbname="postgres", connect_timeout=1, autocommit=True) as conn:
                conn.execute("SET statement_timeout = 1000")
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names'),"
                    " (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                    "  AND sync_state IN ('sync', 'quorum'))").fetchone()
        except psycopg.Error:
            return "down"
        assert row is not None
        if row[0]:
            return "standby"
        return "acknowledging" if (not row[1] or row[2] > 0) else "writable-but-waiting"

    def _run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            states = {n: self._state(n) for n in NODES}
            for n, s in states.items():
                if s == "acknowledging":
                    self.seen[n] += 1
            if all(s == "acknowledging" for s in states.values()):
                self.both.append((now, states))
            self.stop.wait(0.05)

    def finish(self) -> None:
        self.stop.set()
        self.t.join(10)
        assert not self.both, f"both nodes could acknowledge commits at once: {self.both[:3]}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[AutoTwoNode]:
    need_etcd()
    need_postgres()
    c = AutoTwoNode(n_ips=4)
    try:
        c.build("mx1")
        for n in NODES:
            c.start_agent(n)
        wait_for(lambda: c.steady("mx1"), 120, "mx1 holding the key with mx2 its synchronous candidate", every=0.3)
        yield c
    finally:
        for n in NODES:
            path = os.path.join(c.root, n, "agent.log")
            print(f"----- {n} agent log -----\n" + (open(path).read()[-8000:] if os.path.exists(path) else ""))
        c.close()


_clients = iter(range(1, 1000))


def _writer(c: AutoTwoNode) -> Writer:
    """A client whose ids start where no earlier case's client wrote."""
    return Writer(c, first_id=next(_clients) * 10_000_000)


def _no_loss(c: AutoTwoNode, w: Writer, primary: str) -> int:
    acks = w.stop()
    acked = {i for i, _ in acks}
    missing = acked - rows_on(c, primary)
    assert not missing, f"acknowledged commits missing on {primary}: {sorted(missing)[:10]}"
    return len(acked)


def _holder(c: AutoTwoNode) -> str:
    h = c.leader()[0]
    assert h in NODES
    return h


def _ready(c: AutoTwoNode, holder: str) -> None:
    """The steady state a case starts from; an earlier case (or a -k selection) may have left the
    other node diverged after a takeover: it rejoins as the operator would have it."""
    try:
        wait_for(lambda: c.steady(holder), 20, "steady", every=0.3)
    except AssertionError:
        _rejoin(c, OTHER[holder], holder)


def _rejoin(c: AutoTwoNode, old: str, holder: str) -> None:
    """The old Primary back: it streams from the holder by itself, or (diverged: at least its
    shutdown checkpoint never reached the peer) its plan asks for `fenced:`, which the operator
    then gives, naming the new Primary; fenced: is removed again once it is a standby."""
    def asks_or_streams() -> str | None:
        if "fenced: [" in c.plan(old).stdout:
            return "asks"
        pg = c.status_json(old)["postgres"]
        return "streams" if (pg.get("wal_receiver") or {}).get("status") == "streaming" else None
    if wait_for(asks_or_streams, 90, f"{old} asking for fenced: or streaming", every=0.5) == "asks":
        c.set_primary(holder, fenced=(old,))
        wait_for(lambda: c.status_json(old)["postgres"].get("in_recovery") is True, 90, f"{old} rewound, a standby")
    c.set_primary(holder)
    wait_for(lambda: c.steady(holder), 90, f"{old} the synchronous candidate of {holder}")


def _logged_at(c: AutoTwoNode, node: str, text: str, after: float) -> float | None:
    """Wall-clock time of the first agent log line containing `text` at or after `after`."""
    import datetime

    day = datetime.datetime.fromtimestamp(after).date()
    for line in c.agent_log(node).splitlines():
        if text not in line:
            continue
        hms = datetime.datetime.strptime(line.split()[0], "%H:%M:%S.%f").time()
        t = datetime.datetime.combine(day, hms).timestamp()
        if t >= after:
            return t
    return None


def _unchanged(c: AutoTwoNode, holder: str, epoch: int, seconds: float = QUIET_S) -> None:
    """For `seconds`: the same holder at the same epoch, the other node never writable."""
    other = OTHER[holder]
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        assert c.leader() == (holder, epoch), f"the leadership moved: {c.leader()}"
        assert c.status_json(other)["postgres"].get("in_recovery") is not False, f"{other} became writable"
        time.sleep(0.5)


def test_cut_from_the_witness_only_changes_nothing(cluster: AutoTwoNode) -> None:
    c = cluster
    h = _holder(c)
    _ready(c, h)
    epoch = c.leader()[1]
    out = c.plan(h).stdout  # the holder's plan says what it would do if it lost its lease
    lost = out[out.index("If this node lost its lease"):]
    assert "stop service app" in lost and "fast shutdown" in lost and "addresses" in lost, out
    assert "If this node lost" not in c.plan(OTHER[h]).stdout
    m, w = Monitor(c), _writer(c)
    w.wait_acks(20)
    c.cut(h, "wit")
    try:
        _unchanged(c, h, epoch)
        w.wait_acks(20)  # the holder still serves: its own member and the peer's are a majority
    finally:
        c.heal(h, "wit")
    m.finish()
    _no_loss(c, w, h)


def test_witness_down_changes_nothing(cluster: AutoTwoNode) -> None:
    c = cluster
    h = _holder(c)
    epoch = c.leader()[1]
    m, w = Monitor(c), _writer(c)
    c.stop_etcd("wit")
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < QUIET_S:
            assert c.status_json(OTHER[h])["postgres"]["in_recovery"] is True
            assert holds(c, h, VIP) and not holds(c, OTHER[h], VIP)
            time.sleep(0.5)
        w.wait_acks(20)
    finally:
        c.start_etcd("wit")
    wait_for(lambda: c.leader() == (h, epoch), 30, "the witness back, nothing changed")
    m.finish()
    _no_loss(c, w, h)


def test_restarting_the_holders_agent_keeps_the_key(cluster: AutoTwoNode) -> None:
    """SIGTERM and start again (a package upgrade): the new keeper adopts the lease the claim names,
    so the holder keeps the key at the same epoch; nothing is demoted, nothing moves."""
    c = cluster
    h = _holder(c)
    _ready(c, h)
    epoch = c.leader()[1]
    m, w = Monitor(c), _writer(c)
    w.wait_acks(20)
    c.stop_agent(h)
    c.start_agent(h)
    _unchanged(c, h, epoch, seconds=QUIET_S)
    assert c.steady(h)
    w.wait_acks(20)
    m.finish()
    _no_loss(c, w, h)
    log = c.agent_log(h)
    assert "stop service app" not in log.split("agent started")[-1], "the restarted holder demoted something"


def test_cut_from_the_peer_only_promotes_nothing(cluster: AutoTwoNode) -> None:
    """Replication and the peer channel cut, etcd reachable from both: the holder keeps its key;
    commits stop waiting for the standby only after it was withdrawn as the candidate."""
    c = cluster
    h = _holder(c)
    _ready(c, h)
    epoch = c.leader()[1]
    m, w = Monitor(c), _writer(c)
    w.wait_acks(10)
    c.cut(h, OTHER[h])
    try:
        wait_for(lambda: "candidate" not in c.keys(), 30, "the candidate withdrawn")
        _unchanged(c, h, epoch)
        w.wait_acks(20, timeout=30)  # acknowledged again once it stopped waiting for the standby
    finally:
        c.heal(h, OTHER[h])
    wait_for(lambda: c.steady(h), 60, "the standby synchronous and published again")
    m.finish()
    _no_loss(c, w, h)


def test_cut_from_both_demotes_itself_and_the_peer_takes_over(cluster: AutoTwoNode) -> None:
    c = cluster
    old = _holder(c)
    new = OTHER[old]
    _ready(c, old)
    epoch = c.leader()[1]
    m, w = Monitor(c), _writer(c)
    w.wait_acks(20)
    t0, wall0 = time.monotonic(), time.time()
    c.cut(old, new)
    c.cut(old, "wit")
    try:
        wait_for(lambda: c.leader() == (new, epoch + 1), 60, f"{new} holding the key at epoch {epoch + 1}")
        taken = time.monotonic() - t0
        # the old holder was demoted within its budget: by demote_after_s + demotion_budget_s after
        # the cut (its last renewal was before the cut), before its lease could run out
        demoted = _logged_at(c, old, "- 4 addresses on eth0: ok", after=wall0)
        budget = c.timings["demote_after_s"] + c.timings["demotion_budget_s"]
        assert demoted is not None and demoted - wall0 <= budget, (demoted and demoted - wall0, budget)
        wait_for(lambda: holds(c, new, VIP), 30, f"{new} holding the floating address")
        w.wait_acks(20, timeout=60)
        assert not holds(c, old, VIP), f"{old} still holds the floating address"
        assert c.status_json(old)["postgres"]["running"] is False, f"{old} did not stop its PostgreSQL"
    finally:
        c.heal(old, new)
        c.heal(old, "wit")
    m.finish()
    n = _no_loss(c, w, new)
    print(f"takeover: cut -> {new} holds the key in {taken:.1f} s; {n} commits acknowledged, 0 lost")
    # the failover hook ran on both sides, with the facts
    took = [h for h in hook_runs(c, new) if h.get("RECONCILER_WHAT") == "acquired"]
    assert took and took[-1]["RECONCILER_EPOCH"] == str(epoch + 1) and took[-1]["RECONCILER_EVENT"] == "failover"
    assert "synchronous candidate" in took[-1]["RECONCILER_REASON"]
    wait_for(lambda: any(h.get("RECONCILER_WHAT") == "self_demotion" for h in hook_runs(c, old)), 30,
             f"the failover hook on {old} (self-demotion)")
    status = c.status_text(new)
    assert f"Last      failover: epoch {epoch + 1} by {new}" in status and "Watchdog  OFF" in status, status


def test_the_old_primary_comes_back_without_failing_back(cluster: AutoTwoNode) -> None:
    """After the takeover: the old Primary never becomes writable again by itself; its data
    diverged by at least its shutdown checkpoint, so rejoining needs the operator's `fenced:`
    (the plan says so), after which it is rewound and becomes the synchronous candidate."""
    c = cluster
    h = _holder(c)
    old = OTHER[h]
    epoch = c.leader()[1]
    m, w = Monitor(c), _writer(c)
    time.sleep(QUIET_S / 2)
    assert c.leader() == (h, epoch)
    assert c.status_json(old)["postgres"].get("in_recovery") is not False
    _rejoin(c, old, h)
    assert c.leader() == (h, epoch), "the holder changed"
    w.wait_acks(20)
    m.finish()
    _no_loss(c, w, h)


def test_planned_switchover_in_automatic_mode(cluster: AutoTwoNode) -> None:
    c = cluster
    h = _holder(c)
    to = OTHER[h]
    _ready(c, h)
    epoch = c.leader()[1]
    m, w = Monitor(c), _writer(c)
    w.wait_acks(20)
    c.set_primary(to)
    wait_for(lambda: c.leader() == (to, epoch + 1), 60, f"{to} holding the key at epoch {epoch + 1}")
    wait_for(lambda: c.steady(to), 90, f"{h} the synchronous candidate of {to}")
    w.wait_acks(20)
    m.finish()
    _no_loss(c, w, to)


def test_all_etcd_down_the_holder_demotes_and_nobody_promotes(cluster: AutoTwoNode) -> None:
    c = cluster
    h = _holder(c)
    _ready(c, h)
    m, w = Monitor(c), _writer(c)
    w.wait_acks(10)
    for member in ("mx1", "mx2", "wit"):
        c.stop_etcd(member)
    try:
        wait_for(lambda: c.status_json(h)["postgres"]["running"] is False, 30, f"{h} demoted itself")
        t0 = time.monotonic()
        while time.monotonic() - t0 < QUIET_S:
            for n in NODES:
                pg = c.status_json(n)["postgres"]
                assert not (pg["running"] and pg.get("in_recovery") is False), f"{n} writable without etcd"
                assert not holds(c, n, VIP)
            time.sleep(0.5)
    finally:
        for member in ("mx1", "mx2", "wit"):
            c.start_etcd(member)
    wait_for(lambda: c.steady(h), 120, f"{h} holding the key again (the last holder, no candidate published)")
    w.wait_acks(10, timeout=60)
    m.finish()
    _no_loss(c, w, h)


def test_agent_then_postmaster_frozen(cluster: AutoTwoNode) -> None:
    """SIGSTOP on the holder's agent: its keeper stops renewing (no heartbeat), the lease runs out,
    the peer takes over; the frozen node cannot acknowledge anything (its synchronous standby now
    follows the new holder).  With `watchdog: off` nothing removes its addresses until the agent
    runs again (a watchdog would have reset it first): once SIGCONTed it demotes itself.
    Then SIGSTOP on the new holder's postmaster: the heartbeat stops (PostgreSQL does not answer),
    the lease runs out, the takeover goes back."""
    c = cluster
    h = _holder(c)
    new = OTHER[h]
    _ready(c, h)
    epoch = c.leader()[1]
    m, w = Monitor(c), _writer(c)
    w.wait_acks(20)
    agent = c.agents[h]
    os.killpg(agent.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: c.leader() == (new, epoch + 1), 60, f"{new} takes over from the frozen agent")
        w.wait_acks(20, timeout=60)
    finally:
        os.killpg(agent.pid, signal.SIGCONT)
    wait_for(lambda: not holds(c, h, VIP), 30, f"{h} removed its addresses once running again")
    _rejoin(c, h, new)
    epoch = c.leader()[1]

    pm = postmaster(c.pgdata(new))
    assert pm is not None
    os.kill(pm.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: c.leader() == (h, epoch + 1), 60, f"{h} takes over from the frozen PostgreSQL")
        w.wait_acks(20, timeout=60)
    finally:
        os.kill(pm.pid, signal.SIGCONT)
    m.finish()
    _no_loss(c, w, h)


def test_one_shot_apply_and_saved_plans_are_refused_in_automatic_mode(cluster: AutoTwoNode) -> None:
    """Only the agent applies an automatic spec (it holds the lease): `apply` and `plan -out` say so."""
    from demo.cluster import PY

    c = cluster
    for argv in (["apply", c.spec_path("mx1"), "--node", "mx1", "--yes"],
                 ["plan", c.spec_path("mx1"), "--node", "mx1", "-out", os.path.join(c.root, "saved.plan")]):
        r = in_ns(c.ns["mx1"], PY, "-m", "reconciler", *argv, check=False, timeout=60)
        assert r.returncode == 1 and "failover.mode is automatic" in r.stderr, (r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert not os.path.exists(os.path.join(c.root, "saved.plan"))
