"""`python -m lab up|provision|exec|cut|restore|status|down` (root; see the package doc).

`exec NODE [--timeout S] [--bg] -- ARGV...` prints the command's stdout and stderr and exits
with its exit code (124 on timeout, 127 if it could not start); other commands exit 0 on
success and 1 with one line on stderr on failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from lab.client import LabError
from lab.lab import Lab
from lab.topology import layout_from_env


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__.splitlines()[0])
    p.add_argument("--state", help="state directory (env RECONCILER_LAB_DIR, default /run/reconciler-lab)")
    p.add_argument("--name", help="netns / link prefix (env RECONCILER_LAB_NAME, default rlab)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="boot mx1 and mx2 and wait until both agents answer")
    sub.add_parser("down", help="stop the VMs (by PID) and remove everything `up` created")
    sub.add_parser("status", help="JSON: VMs, agents, replication links")
    pr = sub.add_parser("provision", help="one-time DRBD set-up of r0 on fresh disks")
    pr.add_argument("--fencing", default="dont-care", choices=("dont-care", "resource-only"))
    pr.add_argument("--wipe", action="store_true", help="zero both disks first, even if DRBD metadata exists")
    for verb in ("cut", "restore"):
        c = sub.add_parser(verb, help=f"{verb} NODE's replication link on the host side")
        c.add_argument("node")
    e = sub.add_parser("exec", help="run ARGV in NODE, print its output, exit with its code")
    e.add_argument("node")
    e.add_argument("--timeout", type=float, default=60.0)
    e.add_argument("--bg", action="store_true", help="start in the background and print its PID")
    e.add_argument("argv", nargs=argparse.REMAINDER)
    return p


def _exec(lab: Lab, a: argparse.Namespace) -> int:
    argv = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
    if not argv:
        raise LabError("exec needs an argv after --")
    if a.bg:
        print(lab.spawn(a.node, argv))
        return 0
    r = lab.exec(a.node, argv, timeout=a.timeout)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    if r.error:
        print(f"lab: {r.error}", file=sys.stderr)
    return 124 if r.timed_out else (127 if r.rc is None else r.rc)


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        lab = Lab(layout_from_env(a.name, a.state))
        if a.cmd == "up":
            print(f"lab up in {lab.up():.1f} s (state {lab.lay.state})")
        elif a.cmd == "down":
            t = time.monotonic()
            done = lab.down()
            print(f"lab down in {time.monotonic() - t:.1f} s: removed {len(done)} item(s)")
        elif a.cmd == "status":
            print(json.dumps(lab.status(), indent=2))
        elif a.cmd == "provision":
            from lab.provision import provision

            print(provision(lab, fencing=a.fencing, wipe=a.wipe))
        elif a.cmd in ("cut", "restore"):
            lab.set_link(a.node, up=a.cmd == "restore")
        elif a.cmd == "exec":
            return _exec(lab, a)
    except (LabError, ValueError, FileNotFoundError) as e:
        print(f"lab: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
