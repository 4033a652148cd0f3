"""6. Automatic takeover: the Primary cut off → first commit acknowledged by the survivor through the
floating address, as a ratio to the lease TTL; acknowledged commits lost (must be 0).

The automatic-failover cluster of demo/auto_cluster.py: three namespaces (two nodes, a witness),
three real etcd 3.4 members, PostgreSQL 15 in synchronous replication, the real agents, and the
Writer client committing one row at a time through the floating address.  Each round cuts the
holder off from the peer and the witness (blackhole routes both ways: etcd, replication and the
peer channel all lose it), measures until the client's first acknowledged commit after the cut
(only the survivor can acknowledge one: the cut-off holder's commits wait for its synchronous
standby), checks every acknowledged commit is on the survivor, then heals and lets the old Primary
rejoin (it diverged by at least its shutdown checkpoint: the operator's `fenced:` allows the
rewind) before the next round, in the other direction.  Lease TTLs 10 s and 30 s, 5 rounds each.

The reference is the TTL itself: a takeover cannot come before the old holder's lease has run out
on the server (the cut-off holder demotes itself by demote_after_s + demotion_budget_s, earlier).
"""

from __future__ import annotations

import os
import time

from bench.harness import Report, Stat

TTLS = (10, 30)
ROUNDS = 5
IN_FLIGHT_S = 0.5


def _round(c: object, first_id: int) -> dict[str, float]:
    from demo.auto_cluster import AutoTwoNode
    from demo.cluster import NODES, wait_for
    from tests.test_integration import Writer, rows_on

    assert isinstance(c, AutoTwoNode)
    old = c.leader()[0]
    assert old in NODES
    new = next(n for n in NODES if n != old)
    epoch = c.leader()[1]
    w = Writer(c, first_id=first_id)
    try:
        w.wait_acks(50, timeout=60)
        t0 = time.monotonic()
        c.cut(old, new)
        c.cut(old, "wit")
        try:
            # a commit in flight at the cut may still be acknowledged by the old holder within
            # milliseconds (its WAL had reached the standby): the takeover is the first
            # acknowledgement after the key moved and after IN_FLIGHT_S
            wait_for(lambda: c.leader()[0] == new, 30 + 3 * c.timings["lease_ttl_s"], f"{new} holding the key",
                     every=0.1)
            key = c.leader()
            wait_for(lambda: any(t > t0 + IN_FLIGHT_S for _, t in w.acks()), 60, "a commit acknowledged after the cut",
                     every=0.02)
            first = min(t for _, t in w.acks() if t > t0 + IN_FLIGHT_S)
            w.wait_acks(20, timeout=60)
        finally:
            acks = w.stop()
            c.heal(old, new)
            c.heal(old, "wit")
    finally:
        if w.p.poll() is None:
            w.p.kill()
    assert key == (new, epoch + 1), f"after the cut etcd shows {key}, expected ({new}, {epoch + 1})"
    lost = {i for i, _ in acks} - rows_on(c, new)
    _rejoin(c, old, new)
    return {"takeover": first - t0, "lost": float(len(lost)), "acked": float(len(acks))}


def _rejoin(c: object, old: str, holder: str) -> None:
    from tests.test_failover_netns import _rejoin as rejoin

    rejoin(c, old, holder)  # type: ignore[arg-type]


def run(report: Report, quick: bool = False) -> None:
    from demo.auto_cluster import AutoTwoNode
    from demo.cluster import NODES, wait_for

    rounds = 2 if quick else ROUNDS
    for ttl in TTLS:
        c = AutoTwoNode(n_ips=4, ttl=ttl)
        results = []
        try:
            c.build("mx1")
            for n in NODES:
                c.start_agent(n)
            wait_for(lambda c=c: c.steady("mx1"), 120, "mx1 holding the key, mx2 its synchronous candidate", every=0.3)
            for r in range(rounds):
                results.append(_round(c, (r + 1) * 10_000_000))
                print(f"  takeover TTL {ttl} s round {r + 1}: {results[-1]}", flush=True)
        finally:
            if results == [] or os.environ.get("BENCH_KEEP_LOGS"):
                for n in NODES:
                    path = os.path.join(c.root, n, "agent.log")
                    if os.path.exists(path):
                        print(f"----- {n} -----\n" + open(path).read()[-4000:])
            c.close()
        t = Stat([x["takeover"] for x in results])
        ratio = Stat([x["takeover"] / ttl for x in results])
        lost = int(sum(x["lost"] for x in results))
        acked = int(sum(x["acked"] for x in results))
        timing = (f"renew {c.timings['renew_interval_s']} s, demote after {c.timings['demote_after_s']} s, "
                  f"budget {c.timings['demotion_budget_s']} s")
        report.add("6 automatic takeover", f"lease TTL {ttl} s ({timing}): Primary cut off → first commit "
                   f"acknowledged by the survivor, {len(results)} takeovers", t.fmt("s"), f"TTL {ttl} s",
                   ratio.fmt("× TTL", digits=2))
        report.add("6 automatic takeover", f"lease TTL {ttl} s: acknowledged commits lost (of {acked:,})", str(lost),
                   "", "", "0", lost == 0)
