"""Prometheus metrics of one agent (prometheus_client, a registry of its own).

Counters and the cycle-duration histogram are updated by the loop; the state gauges
(DRBD, PostgreSQL, floating IPs, revisions) are computed at scrape time from the latest
cycle, so a resource or revision that went away leaves no stale series behind.
Served as `GET /metrics` on the peer channel when the spec says `agent.metrics: true`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from reconciler.agent.loop import Acted, Converged, OperatorNeeded, Outcome, Retrying
from reconciler.agent.state import revision_label
from reconciler.model import NodeObservation, lsn_to_int
from reconciler.spec import LoadedSpec

BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def _gauge(name: str, doc: str, labels: list[str], rows: Sequence[tuple[list[str], float]]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=labels)
    for values, v in rows:
        g.add_metric(values, v)
    return g


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.applied = Counter("reconciler_actions_applied", "Actions executed successfully, by kind", ["kind"],
                               registry=self.registry)
        self.failed = Counter("reconciler_actions_failed", "Actions that failed, by kind", ["kind"],
                              registry=self.registry)
        self.not_in_effect = Counter("reconciler_actions_not_in_effect",
                                     "Actions that ran but whose effect the next observation did not show, by kind",
                                     ["kind"], registry=self.registry)
        self.duration = Histogram("reconciler_reconcile_duration_seconds",
                                  "One reconcile cycle: observe both nodes, plan, run at most one action",
                                  buckets=BUCKETS, registry=self.registry)
        self._lock = threading.Lock()
        self._last: tuple[LoadedSpec, Outcome, NodeObservation | None, dict[str, str | None]] | None = None
        self.registry.register(self)

    def record(self, spec: LoadedSpec, o: Outcome, peer: NodeObservation | None, seconds: float,
               revisions: dict[str, str | None]) -> None:
        self.duration.observe(seconds)
        if isinstance(o, Acted):
            self.applied.labels(o.action.kind.value).inc()
        elif isinstance(o, Retrying):
            (self.not_in_effect if o.not_in_effect else self.failed).labels(o.action.kind.value).inc()
        with self._lock:
            self._last = (spec, o, peer, dict(revisions))

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # ---- the scrape-time gauges (prometheus_client's Collector protocol) -------------------
    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            last = self._last
        if last is None:
            return
        spec, o, peer, revs = last
        blocked = sum(a.blocked for a in o.plan.actions)
        yield _gauge("reconciler_converged", "1 when this node matches the desired state", [], [([], isinstance(o, Converged))])
        yield _gauge("reconciler_blocked_actions", "Planned actions waiting on a guard", [], [([], blocked)])
        yield _gauge("reconciler_operator_needed", "1 when the next action waits on something only an operator does",
                     [], [([], isinstance(o, OperatorNeeded))])
        yield _gauge("reconciler_peer_reachable", "1 when the peer's snapshot was read", [], [([], peer is not None)])
        yield from _revision_metrics(spec, peer, revs)
        yield from _drbd_metrics(o.own)
        yield from _pg_metrics(o.own, peer)
        yield from _ip_metrics(spec, o.own)
        yield from _coord_metrics(spec, o.own, peer)


def _coord_metrics(spec: LoadedSpec, own: NodeObservation, peer: NodeObservation | None) -> Iterator[Metric]:
    """Automatic failover: effective and preferred Primary, epoch, holder, renewal age, last takeover."""
    c = own.coord
    if spec.model.failover.mode != "automatic" or c is None:
        return
    from reconciler.plan.leadership import role

    eff = role(spec.model, own.node, own, spec.digest, peer).primary
    yield _gauge("reconciler_effective_primary", "The node this node plans for as the Primary (value 1; 'none' "
                 "while nobody holds the leader key)", ["node"], [([eff], 1.0)])
    yield _gauge("reconciler_preferred_primary", "The spec's primary: (value 1)", ["node"], [([spec.model.primary], 1.0)])
    yield _gauge("reconciler_etcd_reachable", "1 when this observation's linearizable etcd read succeeded", [],
                 [([], c.reachable)])
    if c.epoch is not None:
        yield _gauge("reconciler_leader_epoch", "The last epoch etcd handed out", [], [([], c.epoch)])
    yield _gauge("reconciler_leader_holder", "The node holding the leader key (value 1)", ["node"],
                 [([c.leader], 1.0)] if c.leader else [])
    yield _gauge("reconciler_lease_held", "1 when this node holds the leader key", [],
                 [([], c.held_epoch is not None and c.held_lease is not None)])
    if c.since_renewal_s is not None:
        yield _gauge("reconciler_lease_since_renewal_seconds", "Since the send time of the keeper's last answered "
                     "keepalive", [], [([], c.since_renewal_s)])
    yield _gauge("reconciler_watchdog_armed", "1 while this agent holds the watchdog armed", [], [([], c.watchdog_armed)])
    if c.last_epoch is not None and c.last_at is not None and c.last_node is not None:
        yield _gauge("reconciler_last_acquisition_timestamp_seconds", "When the leader key was last acquired "
                     "(epoch >= 2: a failover or switchover), by whom", ["node", "epoch"],
                     [([c.last_node, str(c.last_epoch)], c.last_at)])


def _revision_metrics(spec: LoadedSpec, peer: NodeObservation | None, revs: dict[str, str | None]) -> Iterator[Metric]:
    for which in ("applied", "attempted"):
        rev = revs.get(which)
        rows = [([rev], 1.0)] if rev else []
        yield _gauge(f"reconciler_{which}_revision", f"Last {which} spec revision (the label; value 1)", ["revision"], rows)
    if peer is not None and peer.spec_digest is not None:
        same = revision_label(peer.revision, peer.spec_digest) == revision_label(revs.get("current"), spec.digest)
        yield _gauge("reconciler_peer_same_revision", "1 when the peer applies the same revision", [], [([], same)])


def _drbd_metrics(own: NodeObservation) -> Iterator[Metric]:
    items = sorted(own.drbd.items())
    yield _gauge("reconciler_drbd_primary", "1 when the DRBD resource is Primary here", ["resource"],
                 [([r], d.configured and d.role == "Primary") for r, d in items])
    yield _gauge("reconciler_drbd_connected", "1 when the DRBD resource is Connected (or syncing)", ["resource"],
                 [([r], d.configured and d.connection not in ("StandAlone", "WFConnection", "Connecting", "Disconnecting"))
                  for r, d in items])
    yield _gauge("reconciler_drbd_state", "The resource's role, connection and disk (value 1)",
                 ["resource", "role", "connection", "disk"],
                 [([r, d.role, d.connection, d.disk], 1.0) for r, d in items if d.configured])


def _pg_metrics(own: NodeObservation, peer: NodeObservation | None) -> Iterator[Metric]:
    pg = own.postgres
    if pg is None:
        return
    yield _gauge("reconciler_postgres_up", "1 when PostgreSQL runs here", [], [([], pg.running)])
    yield _gauge("reconciler_postgres_primary", "1 when PostgreSQL is a writable primary here", [],
                 [([], pg.running and pg.in_recovery is False)])
    if pg.timeline is not None:
        yield _gauge("reconciler_postgres_timeline", "PostgreSQL's current timeline", [], [([], pg.timeline)])
    lag = replication_lag(own, peer)
    if lag is not None:
        yield _gauge("reconciler_postgres_replication_lag_bytes",
                     "WAL the standby has not received yet (primary's flush LSN minus the standby's receive LSN)",
                     [], [([], lag)])


def replication_lag(own: NodeObservation, peer: NodeObservation | None) -> int | None:
    a, b = own.postgres, peer.postgres if peer is not None else None
    if a is None or b is None or not (a.running and b.running):
        return None
    primary, standby = (a, b) if a.in_recovery is False else (b, a)
    if primary.in_recovery is not False or standby.in_recovery is not True:
        return None
    if primary.current_lsn is None or standby.receive_lsn is None:
        return None
    return max(0, lsn_to_int(primary.current_lsn) - lsn_to_int(standby.receive_lsn))


def _ip_metrics(spec: LoadedSpec, own: NodeObservation) -> Iterator[Metric]:
    held, want = [], []
    for name, addrs in sorted(spec.addresses.items()):
        i = own.interfaces.get(name)
        owned = {a.address for a in i.addresses if a.owned} if i else set()
        held.append(([name], len(owned & set(addrs))))
        want.append(([name], len(addrs)))
    yield _gauge("reconciler_floating_ips_held", "Desired floating addresses held here (tagged as ours)", ["interface"], held)
    yield _gauge("reconciler_floating_ips_desired", "Floating addresses in the spec", ["interface"], want)
