"""`python -m demo.automatic` (`scripts/demo --automatic`): automatic failover, end to end.

The demo's two nodes plus a witness: three real etcd members (one per node, one on the witness)
in network namespaces, a real PostgreSQL 15 per node in synchronous replication, the agents with
`failover: automatic`.  A client commits through the floating address; the Primary is cut off
from everything mid-load (its cable pulled); it demotes itself, the other node takes over at the
next epoch by itself.  The client's outage and the commits lost (0) are measured; the old Primary
comes back, never writable, and rejoins as a standby once the operator consents to rewinding what
it alone had (unacknowledged WAL); then everyone's status.  Everything is removed at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from demo.__main__ import print_actions, rows_on, say, writer_acks
from demo.auto_cluster import WITNESS, AutoTwoNode
from demo.cluster import NODES, PY, ROOT_DIR, VIP, WRITER, in_ns, wait_for


def show(c: AutoTwoNode, node: str, *args: str, state: bool = True) -> subprocess.CompletedProcess:
    extra = ("--state-dir", c.state_dir(node)) if state else ()
    print(f"[{node}]$ reconciler {' '.join(args)}", flush=True)
    r = in_ns(c.ns[node], PY, "-m", "reconciler", *args, *extra, timeout=300, check=False)
    sys.stdout.write(r.stdout.replace(c.root, "/demo"))
    if r.stderr.strip():
        sys.stdout.write(r.stderr.replace(c.root, "/demo"))
    print(f"(exit status {r.returncode})", flush=True)
    return r


def run_demo() -> int:
    c = AutoTwoNode(n_ips=4)
    writer = None
    try:
        say("1. Two nodes and a witness: namespaces mx1 (10.77.0.1), mx2 (10.77.0.2), wit (10.77.0.3), "
            "an etcd member on each; a client at 10.77.0.100")
        c.build("mx1")
        spec = open(c.spec_path("mx1")).read().replace(c.root, "/demo")
        print("The spec's failover section (short timings for the demo: lease TTL 10 s):")
        print("".join(f"  {line}\n" for line in spec[spec.index("failover:"):].splitlines()))
        show(c, "mx1", "validate", c.spec_path("mx1"), state=False)
        show(c, "mx1", "etcd-config", c.spec_path("mx1"), WITNESS[0], state=False)
        say("2. Start the agents: mx1 (preferred) acquires the leader key at epoch 1")
        t0 = time.monotonic()
        for n in NODES:
            c.start_agent(n)
        wait_for(lambda: c.steady("mx1"), 120, "mx1 holding the key with mx2 its synchronous candidate", every=0.3)
        print(f"mx1 holds the key and mx2 is its synchronous failover candidate {time.monotonic() - t0:.1f}s "
              "after the agents started.")
        show(c, "mx1", "plan", c.spec_path("mx1"), "--node", "mx1")
        say("3. A client commits rows through the floating address")
        out = os.path.join(c.root, "writes.log")
        writer = subprocess.Popen(["ip", "netns", "exec", c.ns["cl"], PY, WRITER, VIP, out, out + ".stop"],
                                  cwd=ROOT_DIR, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: len(writer_acks(out)) > 200, 30, "the client's first writes")
        say("4. mx1 is cut off from mx2 and from the witness (its cable pulled), mid-load")
        t_cut = time.monotonic()
        c.cut("mx1", "mx2")
        c.cut("mx1", "wit")
        wait_for(lambda: c.leader() == ("mx2", 2), 60, "mx2 holding the key at epoch 2", every=0.2)
        t_key = time.monotonic() - t_cut
        wait_for(lambda: [t for _, t in writer_acks(out) if t > t_cut + t_key][:50], 60, "writes on mx2", every=0.05)
        acks = writer_acks(out)
        times = [t for _, t in acks]
        gap = max(b - a for a, b in zip(times, times[1:]) if b > t_cut - 1)
        on_mx2 = rows_on(c, "mx2")
        lost = [i for i, _ in acks if i not in on_mx2]
        print(f"mx2 took the leader key over {t_key:.1f}s after the cut (lease TTL {c.timings['lease_ttl_s']} s).")
        print(f"Write outage seen by the client: {gap:.2f}s (longest gap between acknowledged commits).")
        print(f"{len(acks):,} commits acknowledged to the client so far; {len(lost)} missing on mx2.")
        say("5. mx1's cable back: it never takes the role back by itself")
        c.heal("mx1", "mx2")
        c.heal("mx1", "wit")
        time.sleep(3)
        r = show(c, "mx1", "plan", c.spec_path("mx1"), "--node", "mx1")
        if "fenced: [mx1]" in r.stdout:
            print("mx1 wrote WAL mx2 never received (at least its shutdown checkpoint, and commits it never\n"
                  "acknowledged): rejoining rewinds that away, which only the operator may accept.  The operator\n"
                  "commits `primary: mx2` (the new Primary stays) and `fenced: [mx1]` (consent), then removes fenced:")
            c.set_primary("mx2", fenced=("mx1",))
            wait_for(lambda: c.status_json("mx1")["postgres"].get("in_recovery") is True, 120, "mx1 rewound, a standby")
            c.set_primary("mx2")
        else:
            c.set_primary("mx2")
        wait_for(lambda: c.steady("mx2"), 120, "mx1 the synchronous candidate of mx2", every=0.3)
        print("mx1 is a streaming standby of mx2 and its synchronous failover candidate.")
        open(out + ".stop", "w").close()
        writer.wait(20)
        acks = writer_acks(out)
        on_mx2 = rows_on(c, "mx2")
        lost = [i for i, _ in acks if i not in on_mx2]
        say("6. Result")
        print(f"Takeover: cut -> mx2 holds the key in {t_key:.1f}s; client write outage {gap:.2f}s.")
        print(f"{len(acks):,} commits acknowledged to the client; {len(lost)} missing on the new primary.")
        say("7. Status of both nodes (and of etcd)")
        for n in NODES:
            show(c, n, "status", c.spec_path(n), "--node", n)
        say("8. What the agents did (one line per action)")
        for n in NODES:
            print_actions(c, n, "/demo", also=("acquired",))
        return 0 if not lost else 1
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
        say("9. Cleaning up: agents, etcd, PostgreSQL, namespaces and the temporary directory removed")
        c.close()


def main() -> int:
    if os.geteuid() != 0:
        print("the demo needs root (network namespaces, PostgreSQL run as its owner)", file=sys.stderr)
        return 1
    return run_demo()


if __name__ == "__main__":
    raise SystemExit(main())
