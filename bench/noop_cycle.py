"""2. No-op cycle: one observe + plan on a converged node holding 10,000 floating IPs.

The spec holds only `floating_ips` (10,000 × /32 on eth0, one node): no PostgreSQL, no
DRBD, no service, no peer; what those add is measured on the two-node cluster by the
switchover benchmark.  Reference, same thread, interleaved: `ip -json addr show` run in the
same namespace plus `json.loads` of its output.  Then: where the time goes (cProfile by
category), and the cheap pydantic fix tried (`model_construct` for the 10,000 AddressObs).
"""

from __future__ import annotations

import json
import subprocess
import time
import timeit

from bench.harness import (
    Report,
    Stat,
    fmt_breakdown,
    ipv4_range,
    netns_with_iface,
    profile_breakdown,
    ratio_stat,
    solo_spec,
)

N = 10_000
TARGET = 3.0


def run(report: Report, quick: bool = False) -> None:
    from reconciler.address import parse
    from reconciler.execute.net import add_addresses
    from reconciler.model import AddressObs
    from reconciler.netlink import run_in_netns
    from reconciler.observe.node import observe_node
    from reconciler.plan.planner import plan
    from reconciler.spec.load import load_spec

    rounds = 7 if quick else 21
    spec = load_spec("<memory>", solo_spec(N).encode())
    with netns_with_iface() as ns:
        r = add_addresses("eth0", [parse(a) for a in ipv4_range("10.200.0.1", N, 32)], netns=ns)
        if not r.ok:
            raise RuntimeError(r.summary())

        def cycle_once() -> tuple[float, float]:
            t0 = time.perf_counter()
            own = observe_node(spec, "mx1", spec_digest=spec.digest)
            t1 = time.perf_counter()
            p = plan(spec, "mx1", own, None)
            t2 = time.perf_counter()
            if not p.empty or own.errors:
                raise RuntimeError(f"not a no-op: {p.actions[:1]} {own.errors}")
            return t1 - t0, t2 - t1

        def ip_json() -> float:
            t0 = time.perf_counter()  # forked from this thread: the child is in the namespace too
            out = subprocess.run(["ip", "-json", "addr", "show"], capture_output=True, check=True).stdout
            doc = json.loads(out)
            dt = time.perf_counter() - t0
            got = sum(len(i.get("addr_info", [])) for i in doc)
            if got < N:
                raise RuntimeError(f"ip -json saw {got} addresses, expected {N}")
            return dt

        def measure() -> dict[str, list[float]]:
            out: dict[str, list[float]] = {"observe": [], "plan": [], "cycle": [], "ip": []}
            cycle_once(), ip_json()  # warm up
            for i in range(rounds):
                pair = [cycle_once, ip_json] if i % 2 == 0 else [ip_json, cycle_once]
                for f in pair:
                    v = f()
                    if isinstance(v, tuple):
                        out["observe"].append(v[0])
                        out["plan"].append(v[1])
                        out["cycle"].append(v[0] + v[1])
                    else:
                        out["ip"].append(v)
            return out

        m = run_in_netns(ns, measure)
        ratio = ratio_stat(m["cycle"], m["ip"])
        ref = f"ip -json addr show + json.loads {Stat(m['ip']).fmt('ms', 1000, 1)}"
        report.add("2 no-op cycle", f"observe + plan, {N:,} IPs converged", Stat(m["cycle"]).fmt("ms", 1000, 1), ref,
                   ratio.fmt("×", digits=2), f"≤ {TARGET:g}×", ratio.median <= TARGET)
        report.add("2 no-op cycle", "  of which observe", Stat(m["observe"]).fmt("ms", 1000, 1))
        report.add("2 no-op cycle", "  of which plan", Stat(m["plan"]).fmt("ms", 1000, 1))
        total, parts = run_in_netns(ns, profile_breakdown, cycle_once)
        report.note(f"2: where a no-op cycle's time goes (cProfile own time, {total * 1000:.0f} ms profiled): "
                    + fmt_breakdown(parts, 7))

    # The cheap pydantic fix, measured: building the 10,000 AddressObs of one observation.
    args = [(parse(f"10.200.{i >> 8 & 255}.{i & 255}/32"), True, False) for i in range(N)]
    ctor = lambda: [AddressObs(address=a, owned=o, secondary=s) for a, o, s in args]  # noqa: E731
    cons = lambda: [AddressObs.model_construct(address=a, owned=o, secondary=s) for a, o, s in args]  # noqa: E731
    t_ctor, t_cons = [], []
    for _ in range(rounds):
        t_ctor.append(min(timeit.repeat(ctor, number=1, repeat=1)))
        t_cons.append(min(timeit.repeat(cons, number=1, repeat=1)))
    rc = ratio_stat(t_cons, t_ctor)
    report.add("2 no-op cycle", f"{N:,} AddressObs via model_construct (the 'cheap fix')", Stat(t_cons).fmt("ms", 1000, 1),
               f"validating constructor {Stat(t_ctor).fmt('ms', 1000, 1)}", rc.fmt("×", digits=2))
