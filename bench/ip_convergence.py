"""1. IP convergence: floating IPv4 addresses from empty to all present, and back to empty.

Four ways, interleaved round by round in one fresh namespace per case (eth0 = a veth end
with carrier, nothing else on it):

- `ip -batch`: one `ip` process reading one `addr add` / `addr del` line per address (the
  near-kernel reference: one netlink request and ack per address);
- `reconciler apply`: the real command on a one-node spec holding only `floating_ips`
  (no peer to ask, no PostgreSQL, no DRBD; `announce.count: 0`, because announcements
  are paced on purpose at `rate_limit_pps` and `apply` waits for them), run as
  `ip netns exec NS python -m reconciler apply SPEC --node mx1 --yes`; removal is the same
  spec with `primary: none`;
- in-process: the same library path without interpreter start-up (load spec, then
  observe + plan + execute until converged), in a thread moved into the namespace;
- one `ip -n NS addr add|del` process per address (today's manual method, no shell); for
  10,000 addresses only 1,000 are timed this way and multiplied by 10 (the other 9,000 go
  through `ip -batch`, untimed).

`ip -batch` runs through `ip netns exec` too, so both pay the same namespace entry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from bench.harness import PY, ROOT, Report, Stat, interleave, ipv4_range, netns_with_iface, ratio_stat, sh, solo_spec

CASES = [  # label, count, prefix, first address
    ("1,000 × /32", 1000, 32, "10.200.0.1"),
    ("10,000 × /32", 10000, 32, "10.200.0.1"),
    ("10,000 in one /16", 10000, 16, "10.201.0.1"),
]
LOOP_SAMPLE = 1000
TARGET = 1.2


def _count(ns: str) -> int:
    from reconciler.netlink import run_in_netns
    from reconciler.observe.net import read_interfaces

    obs = run_in_netns(ns, read_interfaces, ["eth0"])["eth0"]
    return len(obs.addresses)


def _inproc(spec_path: str) -> None:
    """What `apply` does after its imports: load, then observe + plan + execute until converged."""
    from reconciler.agent.loop import Acted, Converged, Loop
    from reconciler.observe.node import observe_node
    from reconciler.spec.load import load_spec

    spec = load_spec(spec_path)
    observe = lambda sp, n: observe_node(sp, n, spec_digest=sp.digest)  # noqa: E731
    loop = Loop("mx1", observe, lambda: None)
    for _ in range(10):
        o = loop.step(spec)
        if isinstance(o, Converged):
            return
        if not isinstance(o, Acted):
            raise RuntimeError(f"in-process apply: {o}")
    raise RuntimeError("in-process apply did not converge")


def run_case(report: Report, label: str, n: int, prefix: int, first: str, repeats: int) -> None:
    from reconciler.netlink import run_in_netns

    addrs = ipv4_range(first, n, prefix)
    brd = " brd +" if prefix <= 30 else ""  # what reconciler sends too (IFA_BROADCAST, like `brd +`)
    tmp = tempfile.mkdtemp(prefix="rcbench-ip-")
    try:
        up, down = os.path.join(tmp, "up.yaml"), os.path.join(tmp, "down.yaml")
        with open(up, "w") as f:
            f.write(solo_spec(n, first=first, prefix=prefix))
        with open(down, "w") as f:
            f.write(solo_spec(n, first=first, prefix=prefix, primary="none"))
        add_b, del_b = os.path.join(tmp, "add.batch"), os.path.join(tmp, "del.batch")
        with open(add_b, "w") as f:
            f.writelines(f"addr add {a}{brd} dev eth0\n" for a in addrs)
        with open(del_b, "w") as f:  # newest first: an IPv4 subnet's primary (the first added) goes last
            f.writelines(f"addr del {a} dev eth0\n" for a in reversed(addrs))
        sample = min(n, LOOP_SAMPLE)
        scale = n / sample
        rest_add, rest_del = os.path.join(tmp, "rest_add.batch"), os.path.join(tmp, "rest_del.batch")
        with open(rest_add, "w") as f:  # the loop times the first `sample` adds ...
            f.writelines(f"addr add {a}{brd} dev eth0\n" for a in addrs[sample:])
        with open(rest_del, "w") as f:  # ... and the first `sample` deletions (newest first)
            f.writelines(f"addr del {a} dev eth0\n" for a in reversed(addrs[: n - sample]))

        with netns_with_iface() as ns:
            times: dict[str, list[float]] = {}

            def check(want: int, what: str) -> None:
                got = _count(ns)
                if got != want:
                    raise RuntimeError(f"{label}: {what}: {got} addresses on eth0, expected {want}")

            def pair(name: str, add, remove) -> float:  # noqa: ANN001
                t0 = time.perf_counter()
                add()
                ta = time.perf_counter() - t0
                check(n, f"{name} add")
                t0 = time.perf_counter()
                remove()
                tr = time.perf_counter() - t0
                check(0, f"{name} remove")
                times.setdefault(name + " add", []).append(ta)
                times.setdefault(name + " remove", []).append(tr)
                return ta + tr

            def batch(path: str) -> None:
                sh("ip", "netns", "exec", ns, "ip", "-batch", path, timeout=600)

            def apply(path: str) -> None:
                sh("ip", "netns", "exec", ns, PY, "-m", "reconciler", "apply", path, "--node", "mx1", "--yes",
                   timeout=600, cwd=ROOT)

            def loop(verb: str, items: list[str]) -> float:
                t0 = time.perf_counter()
                for a in items:
                    argv = ["ip", "-n", ns, "addr", verb, a] + (["brd", "+"] if brd and verb == "add" else []) + ["dev", "eth0"]
                    subprocess.run(argv, check=True, capture_output=True, timeout=30)
                return time.perf_counter() - t0

            def loop_pair() -> float:
                ta = loop("add", addrs[:sample]) * scale
                batch(rest_add)
                check(n, "loop add")
                tr = loop("del", list(reversed(addrs))[:sample]) * scale
                batch(rest_del)
                check(0, "loop remove")
                times.setdefault("loop add", []).append(ta)
                times.setdefault("loop remove", []).append(tr)
                return ta + tr

            methods = {
                "batch": lambda: pair("batch", lambda: batch(add_b), lambda: batch(del_b)),
                "apply": lambda: pair("apply", lambda: apply(up), lambda: apply(down)),
                "inproc": lambda: pair("inproc", lambda: run_in_netns(ns, _inproc, up),
                                       lambda: run_in_netns(ns, _inproc, down)),
                "loop": loop_pair,
            }
            interleave(repeats, methods)

        for verb in ("add", "remove"):
            ref = times[f"batch {verb}"]
            refs = Stat(ref).fmt()
            for m, name in (("apply", "`reconciler apply`"), ("inproc", "in-process observe+plan+execute")):
                r = ratio_stat(times[f"{m} {verb}"], ref)
                report.add("1 IP convergence", f"{verb} {label}: {name}", Stat(times[f"{m} {verb}"]).fmt(),
                           f"ip -batch {refs}", r.fmt("×", digits=2), f"≤ {TARGET}×", r.median <= TARGET)
            r = ratio_stat(times[f"loop {verb}"], ref)
            how = "" if scale == 1 else f" ({sample:,} timed ×{scale:g})"
            report.add("1 IP convergence", f"{verb} {label}: one `ip` process per address{how}",
                       Stat(times[f"loop {verb}"]).fmt(), f"ip -batch {refs}", r.fmt("×", digits=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def startup(report: Report, repeats: int) -> None:
    """What `apply` pays before any work: `ip netns exec`, the interpreter and its imports."""
    with netns_with_iface() as ns:
        def imports() -> float:
            t0 = time.perf_counter()
            sh("ip", "netns", "exec", ns, PY, "-c", "import reconciler.cli.main, reconciler.cli.agent_cmds", cwd=ROOT)
            return time.perf_counter() - t0

        def bare() -> float:
            t0 = time.perf_counter()
            sh("ip", "netns", "exec", ns, PY, "-c", "pass", cwd=ROOT)
            return time.perf_counter() - t0

        m = interleave(repeats * 2, {"imports": imports, "bare": bare})
    report.add("1 IP convergence", "start-up alone: ip netns exec + python + reconciler's imports (no work)",
               Stat(m["imports"]).fmt(), f"ip netns exec + bare python {Stat(m['bare']).fmt()}")


def partial(report: Report, repeats: int, n: int = 10_000, k: int = 5_000) -> None:
    """A spec edit that drops k of n addresses on the Primary (the removal-order bug's case)."""
    addrs = ipv4_range("10.200.0.1", n, 32)
    tmp = tempfile.mkdtemp(prefix="rcbench-ip-")
    try:
        full, part = os.path.join(tmp, "full.yaml"), os.path.join(tmp, "part.yaml")
        with open(full, "w") as f:
            f.write(solo_spec(n))
        with open(part, "w") as f:
            f.write(solo_spec(n - k))
        dele = os.path.join(tmp, "del.batch")
        with open(dele, "w") as f:
            f.writelines(f"addr del {a} dev eth0\n" for a in reversed(addrs[n - k:]))
        with netns_with_iface() as ns:
            def apply(path: str) -> float:
                t0 = time.perf_counter()
                sh("ip", "netns", "exec", ns, PY, "-m", "reconciler", "apply", path, "--node", "mx1", "--yes",
                   timeout=3600, cwd=ROOT)
                return time.perf_counter() - t0

            def batch() -> float:
                t0 = time.perf_counter()
                sh("ip", "netns", "exec", ns, "ip", "-batch", dele, timeout=600)
                return time.perf_counter() - t0

            apply(full)
            m = interleave(repeats, {"apply": lambda: apply(part), "batch": batch},
                           setup=lambda: (apply(full), None)[1])
            apply(full)
            if _count(ns) != n:
                raise RuntimeError("partial removal: wrong address count after re-adding")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    r = ratio_stat(m["apply"], m["batch"])
    report.add("1 IP convergence", f"remove {k:,} of {n:,} × /32 by a spec edit: `reconciler apply`",
               Stat(m["apply"]).fmt(), f"ip -batch (same {k:,}) {Stat(m['batch']).fmt()}", r.fmt("×", digits=2),
               f"≤ {TARGET}×", r.median <= TARGET)


def where(report: Report) -> None:
    """cProfile of the in-process path for 10,000 × /32, add then remove."""
    from bench.harness import fmt_breakdown, profile_breakdown
    from reconciler.netlink import run_in_netns

    tmp = tempfile.mkdtemp(prefix="rcbench-ip-")
    try:
        up, down = os.path.join(tmp, "up.yaml"), os.path.join(tmp, "down.yaml")
        with open(up, "w") as f:
            f.write(solo_spec(10_000))
        with open(down, "w") as f:
            f.write(solo_spec(10_000, primary="none"))
        with netns_with_iface() as ns:
            for what, path in (("add", up), ("remove", down)):
                total, parts = run_in_netns(ns, profile_breakdown, lambda p=path: _inproc(p))
                report.note(f"1: in-process {what} of 10,000 × /32, where the time goes (cProfile own time, "
                            f"{total:.2f} s profiled): {fmt_breakdown(parts, 6)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(report: Report, quick: bool = False) -> None:
    repeats = 2 if quick else 5
    startup(report, repeats)
    for label, n, prefix, first in CASES:
        run_case(report, label, n, prefix, first, repeats)
    partial(report, 2 if quick else 3)
    where(report)
    report.note("1: apply/in-process use a one-node spec with only floating_ips and announce.count 0 "
                "(announcements are paced at rate_limit_pps by design: 10,000 × 3 at 2,000 pps = 15 s, in the background)")
