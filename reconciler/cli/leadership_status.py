"""The automatic-failover part of `reconciler status`: who is Primary and why, the epoch, the
lease, the candidate, the last takeover and the watchdog, from this node's observation."""

from __future__ import annotations

import time

from reconciler.model import NodeObservation
from reconciler.plan.leadership import role
from reconciler.spec import LoadedSpec


def leadership_lines(spec: LoadedSpec, own: NodeObservation, peer: NodeObservation | None) -> list[str]:
    s, c = spec.model, own.coord
    if s.failover.mode != "automatic" or c is None:
        return []
    f = s.failover
    r = role(s, own.node, own, spec.digest, peer)
    out = [f"Primary   effective: {r.primary} ({r.why}); preferred (spec primary:): {s.primary}"]
    if r.primary not in (s.primary, "none"):
        out.append(f"          the next revision of the spec that still names {s.primary} switches over to it: "
                   f"set primary: {r.primary} to keep {r.primary}")
    if not c.reachable:
        out.append(f"etcd      UNREADABLE from here: {c.error or 'no answer'}")
    else:
        cand = f"{c.candidate} (epoch {c.candidate_epoch})" if c.candidate else "none"
        out.append(f"Epoch     {c.epoch} (the highest this agent has seen: {c.remembered_epoch}); "
                   f"holder {c.leader or 'nobody'}; failover candidate {cand}")
    since = f"renewed {c.since_renewal_s:.1f} s ago" if c.since_renewal_s is not None else "no renewal yet"
    mine = (f"this node holds the key (epoch {c.held_epoch})" if c.held_epoch is not None and c.held_lease is not None
            else "this node does not hold the key")
    lease = f"{c.lease:x}" if c.lease is not None else "none"
    out.append(f"Lease     {mine}; keeper lease {lease}, {since} (a holder demotes itself after "
               f"{f.demote_after_s:g} s without; TTL {f.lease_ttl_s} s)")
    if c.last_epoch is not None:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.last_at)) if c.last_at else "?"
        kind = "failover" if c.last_epoch >= 2 else "first acquisition"
        out.append(f"Last      {kind}: epoch {c.last_epoch} by {c.last_node} at {at}: {c.last_why or '?'}")
    if f.watchdog == "off":
        out.append("Watchdog  OFF: nothing resets this node if its self-demotion hangs or its agent freezes; the "
                   "peer then takes over while this node may still hold the floating addresses (its PostgreSQL "
                   "acknowledges nothing: its synchronous standby follows the new Primary)")
    else:
        out.append(f"Watchdog  {f.watchdog.device}, {f.watchdog.timeout_s} s: "
                   + ("armed (fed after each renewal)" if c.watchdog_armed else "not armed"))
    return out
