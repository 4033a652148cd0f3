"""Desired-state specs for the simulated cluster, built in memory (no file I/O)."""

from __future__ import annotations

from reconciler.address import Address, parse
from reconciler.spec import LoadedSpec
from reconciler.spec.models import PLAN_ONLY, Spec


def make_spec(primary: str = "mx1", fenced: tuple[str, ...] = (),
              ips: tuple[str | Address, ...] = ("10.9.0.10/24", "10.9.0.11/24", "10.9.0.12/24"),
              drbd: bool = True, postgres: bool = True, services: bool = True, automatic: bool = False,
              rev: int = 0, watchdog: bool = True) -> LoadedSpec:
    """`automatic`: failover on etcd with a witness and short timings (TTL 10 s, demotion after 3 s
    without a renewal, watchdog 6 s), synchronous replication; `rev` makes each edit a new revision."""
    doc: dict = {
        "cluster": "sim",
        "nodes": {"mx1": {"address": "10.0.0.1"}, "mx2": {"address": "10.0.0.2"}},
        "primary": primary,
        "fenced": list(fenced),
        "floating_ips": {"interface": "eth0", "addresses": [str(a) for a in ips]},
    }
    if drbd:
        doc["drbd"] = [{"name": "r0", "device": "/dev/drbd0", "mount": "/var/hvmail"}]
    if postgres:
        doc["postgres"] = {"data_dir": "/var/lib/postgresql/15/main"}
    if services:
        doc["services"] = [{"name": "greenarrow"}, {"name": "smtp"}]
    if automatic:
        doc["failover"] = {"mode": "automatic", "witness": {"name": "wit", "address": "10.0.0.3"},
                           "lease_ttl_s": 10, "renew_interval_s": 1, "demote_after_s": 3, "demotion_budget_s": 3,
                           "watchdog": {"timeout_s": 6} if watchdog else "off"}
        doc["postgres"] = {"data_dir": "/var/lib/postgresql/15/main", "synchronous": True}
    spec = Spec.model_validate(doc, context={PLAN_ONLY: True})
    addrs = tuple(sorted({parse(str(a)) for a in ips}))
    # as the loader does: floating_ips.interface is managed even with no addresses on it
    return LoadedSpec(model=spec, addresses={"eth0": addrs}, digest=f"sim-{primary}-{fenced}-{ips}-r{rev}")
