"""`python -m demo`: the main job on a local two-node cluster, end to end.

Builds two nodes in network namespaces (real PostgreSQL 15 in each, a stand-in mail
service, floating addresses), shows the live plan, applies it, starts both agents, lets
a client write through the floating address, switches over by editing the desired-state
file (the changed line is shown), measures the write outage, checks that no
acknowledged write was lost, prints both nodes' status, and removes everything.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from demo.cluster import NODES, PY, ROOT_DIR, VIP, WRITER, TwoNode, in_ns, wait_for

DEMO_ROOT = "/run/reconciler-demo"
SPEC = os.path.join(ROOT_DIR, "specs", "demo.yaml")


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def show(c: TwoNode, node: str, *args: str) -> subprocess.CompletedProcess:
    argv = [PY, "-m", "reconciler", *args]
    print(f"[{node}]$ reconciler {' '.join(args)}", flush=True)
    r = in_ns(c.ns[node], *argv, timeout=300, check=False)
    sys.stdout.write(r.stdout.replace(c.root, DEMO_ROOT))
    if r.stderr.strip():
        sys.stdout.write(r.stderr)
    print(f"(exit status {r.returncode})", flush=True)
    return r


def edit_primary(c: TwoNode, new: str) -> None:
    """What an operator does: change one line of the file, on both nodes (as git pull would)."""
    for n in NODES:
        path = c.spec_path(n)
        text = open(path).read()
        old_line = next(line for line in text.splitlines() if line.startswith("primary:"))
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text.replace(old_line, f"primary: {new}", 1))
        os.replace(tmp, path)
    print(f"  cluster.yaml:  - {old_line}\n                 + primary: {new}")


def writer_acks(path: str) -> list[tuple[int, float]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(int(a), float(b)) for a, b in (line.split() for line in f if line.strip())]


def rows_on(c: TwoNode, node: str) -> set[int]:
    r = in_ns(c.ns[node], "runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/psql", "-h",
              os.path.join(c.root, node, "sock"), "-X", "-At", "-d", "postgres", "-c", "SELECT id FROM writes")
    return {int(x) for x in r.stdout.split()}


def print_actions(c: TwoNode, node: str, alias: str, also: tuple[str, ...] = ()) -> None:
    """One line per action the node's agent ran (and lines holding any of `also`), paths shown as `alias`."""
    for line in c.agent_log(node).splitlines():
        if (" in " in line and ("ok" in line or "failed" in line)) or any(t in line for t in also):
            print("  " + line.replace(c.root, alias)[:220])


def run_demo() -> int:
    template = open(SPEC).read()
    c = TwoNode(root=DEMO_ROOT, template=template)
    writer = None
    try:
        say("1. Two nodes on this machine: namespaces mx1 (10.77.0.1) and mx2 (10.77.0.2) on a bridge, a client at 10.77.0.100")
        c.build("mx1")
        print("PostgreSQL 15 initialised on mx1 (stopped); mx2's data directory is empty.")
        say(f"2. The desired state: specs/demo.yaml (primary: mx1, floating address {VIP} for clients)")
        show(c, "mx1", "validate", c.spec_path("mx1"))
        say("3. The live plan on each node (dry run; exit 2 = changes pending)")
        show(c, "mx1", "plan", c.spec_path("mx1"), "--node", "mx1")
        show(c, "mx2", "plan", c.spec_path("mx2"), "--node", "mx2")
        print("Both plans wait: neither node can see the other yet, and nothing is started writable\n"
              "until the peer's state is known.  The agents serve their state to each other.")
        say("4. Apply: start the agent on each node (reconciler run)")
        t0 = time.monotonic()
        for n in NODES:
            c.start_agent(n)
        c.wait_converged(120)
        print(f"Both nodes converged {time.monotonic() - t0:.2f}s after the agents started.")
        for n in NODES:
            show(c, n, "plan", c.spec_path(n), "--node", n)
        say("5. A client commits rows through the floating address")
        out = os.path.join(c.root, "writes.log")
        writer = subprocess.Popen(["ip", "netns", "exec", c.ns["cl"], PY, WRITER, VIP, out, out + ".stop"],
                                  cwd=ROOT_DIR, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: len(writer_acks(out)) > 200, 30, "the client's first writes")
        say("6. Switch over: the operator edits one line of the file on both nodes")
        t_edit = time.monotonic()
        edit_primary(c, "mx2")
        wait_for(lambda: [t for _, t in writer_acks(out) if t > t_edit + 0.2][:50], 60, "writes on the new primary", every=0.02)
        c.wait_converged(60)
        t_conv = time.monotonic() - t_edit
        open(out + ".stop", "w").close()
        writer.wait(20)
        acks = writer_acks(out)
        times = [t for _, t in acks]
        gap = max(b - a for a, b in zip(times, times[1:]) if b > t_edit - 1)
        on_mx2 = rows_on(c, "mx2")
        lost = [i for i, _ in acks if i not in on_mx2]
        say("7. Result")
        print(f"Write outage seen by the client: {gap:.3f}s (longest gap between acknowledged commits).")
        print(f"Both nodes converged {t_conv:.2f}s after the edit.")
        print(f"{len(acks):,} commits acknowledged to the client; {len(lost)} missing on the new primary.")
        say("8. Status of both nodes")
        for n in NODES:
            show(c, n, "status", c.spec_path(n), "--node", n)
        say("9. What the agents did (one line per action)")
        for n in NODES:
            print_actions(c, n, DEMO_ROOT)
        return 0 if not lost else 1
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
        say("10. Cleaning up: agents, PostgreSQL, namespaces and /run/reconciler-demo removed")
        c.close()


def main() -> int:
    argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0],
                            epilog="The same story on the two-VM DRBD lab: scripts/demo --real-drbd "
                                   "(python -m lab.demo).").parse_args()
    if os.geteuid() != 0:
        print("the demo needs root (network namespaces, PostgreSQL run as its owner)", file=sys.stderr)
        return 1
    if os.path.exists(DEMO_ROOT):
        print(f"{DEMO_ROOT} exists: an earlier demo did not finish; remove it first", file=sys.stderr)
        return 1
    return run_demo()


if __name__ == "__main__":
    raise SystemExit(main())
