"""`python -m lab.demo` (`scripts/demo --real-drbd`): the demo's switchover story on the two-VM DRBD lab.

Boots mx1 and mx2 under qemu (`lab`), provisions DRBD r0, builds the cluster of
`lab.cluster` (r0 on /srv/hvmail, PostgreSQL 15 on each VM's own storage, four
floating IPs on eth1, the stand-in service), shows the plans, starts the agents inside the
VMs, lets a client on the host commit rows through the floating address, switches over by editing
one line of the file on both VMs, reports the write outage and the acknowledged commits
missing on the new primary, both nodes' status and the agents' actions, and takes the lab
down again (always).  Takes 5-8 minutes: everything in the VMs runs under TCG emulation.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from lab.client import LabError
from lab.cluster import SPEC, STATE_DIR, LabCluster, Writer, spec_text
from lab.lab import Lab
from lab.provision import provision
from lab.topology import Layout

NAME, STATE = "rlabdemo", Path("/run/reconciler-lab-demo")


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def show(c: LabCluster, node: str, *args: str) -> None:
    print(f"[{node}]$ reconciler {' '.join(args)}", flush=True)
    r = c.cli(node, *args, timeout=300)
    sys.stdout.write(r.stdout + r.stderr)
    print(f"(exit status {r.rc})", flush=True)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def run_real_drbd_demo() -> int:
    # The demo's lab lives only as long as this process: SIGTERM unwinds through `down` like
    # Ctrl-C, and after a SIGKILL the next demo's `up` removes what was left.
    signal.signal(signal.SIGTERM, _terminated)
    lab = Lab(Layout(NAME, STATE), owned=True)
    c = LabCluster(lab)
    writer: Writer | None = None
    t_start = time.monotonic()
    net = lab.lay.mgmt_net
    say("1. Two VMs under qemu: mx1 and mx2, replication on eth0 (10.0.0.1/.2), management on eth1 "
        f"({net}.11/.12, this host at {net}.1)")
    try:
        print(f"lab up in {lab.up():.1f} s")  # cleans up after itself when it fails
    except LabError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    try:
        print(provision(lab))
        c.build("mx1")
        print("PostgreSQL 15 initialised on mx1 (stopped); mx2's data directory is empty.")
        say(f"2. The desired state, the same file on both VMs ({SPEC})")
        sys.stdout.write(spec_text(net, "mx1"))
        say("3. The live plan on each node (dry run; exit 2 = changes pending)")
        for n in ("mx1", "mx2"):
            show(c, n, "plan", SPEC, "--node", n)
        say("4. Apply: start the agent in each VM (reconciler run)")
        c.start_agents()
        print(f"Both nodes converged {c.wait_converged(timeout=600):.1f} s after the agents started.")
        say(f"5. A client on this host commits rows through the floating address {c.vip}")
        writer = Writer(c.vip)
        writer.wait_acks(50)
        print(f"{len(writer.acks())} commits acknowledged so far.")
        say("6. Switch over: the operator edits one line of the file on both VMs")
        since = c.offsets()
        t_edit = time.monotonic()
        c.set_spec("mx2")
        print(f"  {SPEC}:  - primary: mx1\n{' ' * (len(SPEC) + 4)}+ primary: mx2")
        c.wait_converged(since, timeout=600)
        t_conv = time.monotonic() - t_edit
        writer.wait_acks(20)
        acks = writer.stop()
        gap = Writer.longest_gap(acks, t_edit - 1)
        present = c.rows("mx2")
        lost = [i for i, _ in acks if i not in present]
        say("7. Result")
        print(f"Write outage seen by the client: {gap:.1f} s (longest gap between acknowledged commits).")
        print(f"Both nodes converged {t_conv:.1f} s after the edit.")
        print(f"{len(acks):,} commits acknowledged to the client; {len(lost)} missing on the new primary.")
        say("8. Status of both nodes")
        for n in ("mx1", "mx2"):
            show(c, n, "status", SPEC, "--node", n, "--state-dir", STATE_DIR)
        say("9. What the agents did (one line per action)")
        for n in ("mx1", "mx2"):
            for line in c.log(n).splitlines():
                if ": ok in " in line or ": failed in " in line:
                    print("  " + line[:220])
        return 0 if not lost else 1
    except LabError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    finally:
        if writer is not None:
            writer.stop()
        say("10. Cleaning up: both VMs stopped, the lab's namespace, links and files removed")
        try:
            lab.down()
        except LabError as e:
            print(f"demo: {e}", file=sys.stderr)
        print(f"(the whole demo took {time.monotonic() - t_start:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__.splitlines()[0]).parse_args(argv)
    return run_real_drbd_demo()


if __name__ == "__main__":
    raise SystemExit(main())
