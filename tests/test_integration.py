"""Integration tier: two network namespaces, a real PostgreSQL 15 per node, the real agent
in each.  Each scenario asserts the end state from the real systems."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.conftest import need_netns, need_postgres
from tests.twonode import CLIENT_ADDR, NODES, PY, ROOT_DIR, VIP, TwoNode, in_ns, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster():
    need_netns()
    need_postgres()
    c = TwoNode(n_ips=4)
    try:
        c.build("mx1")
        for n in NODES:
            c.start_agent(n)
        yield c
    finally:
        for n in NODES:  # shown by pytest when the test failed
            print(f"----- {n} agent log -----\n" + c.agent_log(n)[-6000:] if os.path.exists(c.spec_path(n)) else "")
        c.close()


def holds(c: TwoNode, node: str, ip: str) -> bool:
    r = in_ns(c.ns[node], "ip", "-o", "addr", "show", "dev", "eth0")
    return f" {ip}/" in r.stdout


def assert_primary(c: TwoNode, primary: str) -> None:
    other = next(n for n in NODES if n != primary)
    p, s = c.status_json(primary), c.status_json(other)
    assert p["postgres"]["running"] and p["postgres"]["in_recovery"] is False
    assert s["postgres"]["running"] and s["postgres"]["in_recovery"] is True
    wait_for(lambda: (c.status_json(other)["postgres"].get("wal_receiver") or {}).get("status") == "streaming",
             30, f"{other} streaming")
    assert c.status_json(other)["postgres"]["wal_receiver"]["sender_host"] == NODES[primary]
    assert holds(c, primary, VIP) and not holds(c, other, VIP)
    assert p["services"]["app"]["active"] and not s["services"]["app"]["active"]


def test_bring_up_from_fresh_data_directories(cluster):
    cluster.wait_converged(120)
    assert_primary(cluster, "mx1")


class Writer:
    """The client: commits rows through the floating IP from its own namespace."""

    def __init__(self, c: TwoNode) -> None:
        self.c = c
        self.out = os.path.join(c.root, f"writes-{time.monotonic_ns()}.log")
        self.stop_file = self.out + ".stop"
        self.p = subprocess.Popen(["ip", "netns", "exec", c.ns["cl"], PY, os.path.join(ROOT_DIR, "tests", "helpers", "writer.py"),
                                   VIP, self.out, self.stop_file], cwd=ROOT_DIR, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def acks(self) -> list[tuple[int, float]]:
        if not os.path.exists(self.out):
            return []
        with open(self.out) as f:
            return [(int(a), float(b)) for a, b in (line.split() for line in f if line.strip())]

    def wait_acks(self, n: int, timeout: float = 30) -> None:
        base = len(self.acks())
        wait_for(lambda: len(self.acks()) >= base + n, timeout, f"{n} more acknowledged writes")

    def stop(self) -> list[tuple[int, float]]:
        open(self.stop_file, "w").close()
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
        return self.acks()


def rows_on(c: TwoNode, node: str) -> set[int]:
    r = in_ns(c.ns[node], "runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/psql", "-h", c.pgdata(node),
              "-X", "-At", "-d", "postgres", "-c", "SELECT id FROM writes")
    return {int(x) for x in r.stdout.split()}


def switchover(c: TwoNode, to: str, w: Writer) -> float:
    """Edit the spec on both nodes, wait for convergence; return the longest write gap (s)."""
    w.wait_acks(20)
    t0 = time.monotonic()
    c.set_primary(to)
    wait_for(lambda: holds(c, to, VIP) and c.status_json(to)["postgres"]["in_recovery"] is False, 60, f"{to} primary")
    w.wait_acks(20)
    c.wait_converged(60)
    acks = [t for _, t in w.acks() if t >= t0 - 1]
    return max(b - a for a, b in zip(acks, acks[1:]))


def test_planned_switchover_loses_nothing_and_switches_back_20_times(cluster):
    c = cluster
    c.wait_converged(120)
    w = Writer(c)
    outages = []
    try:
        for i in range(20):
            to = "mx2" if i % 2 == 0 else "mx1"
            outages.append(switchover(c, to, w))
            assert_primary(c, to)
    finally:
        acks = w.stop()
    final = "mx1"
    present = rows_on(c, final)
    lost = [i for i, _ in acks if i not in present]
    assert acks and not lost, f"{len(lost)} acknowledged writes lost: {lost[:10]}"
    outages.sort()
    print(f"\nwrite outage over {len(outages)} switchovers: median {outages[len(outages) // 2]:.3f}s, "
          f"min {outages[0]:.3f}s, max {outages[-1]:.3f}s; {len(acks)} acknowledged writes, none lost")
