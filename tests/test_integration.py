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
