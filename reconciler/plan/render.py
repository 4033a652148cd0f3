"""Plan output: Terraform-style text for people, versioned JSON for programs.

Thousands of addresses collapse into contiguous runs (`+ 9,999 addresses 10.1.0.1 …
10.1.39.15/16 on eth0`); `verbose` lists every address.  Counts: every address is one
add/remove; every other action is one add (+), change (~) or remove (-).
"""

from __future__ import annotations

import hashlib
import json

from reconciler.address import Address
from reconciler.model import NodeObservation
from reconciler.plan.actions import Action, Kind, Plan

FORMAT_VERSION = "1.0"
_ADDR_KINDS = {Kind.ADD_ADDRESSES, Kind.REMOVE_ADDRESSES, Kind.ADOPT_ADDRESSES}
_MAX_RUNS = 12

_TITLE = {
    Kind.STOP_SERVICE: "stop service {t}",
    Kind.START_SERVICE: "start service {t}",
    Kind.SET_PROMOTE_SECONDARIES: "set net.ipv4.conf.{t}.promote_secondaries = 1",
    Kind.UNMOUNT: "unmount {t}",
    Kind.MOUNT: "mount {device} on {t}",
    Kind.DRBD_UP: "drbd {t}: up (attach and connect)",
    Kind.DRBD_CONNECT: "drbd {t}: connect",
    Kind.DRBD_SECONDARY: "drbd {t}: Primary -> Secondary",
    Kind.DRBD_PRIMARY: "drbd {t}: Secondary -> Primary",
    Kind.PG_STOP: "postgres: CHECKPOINT, then fast shutdown",
    Kind.PG_CRASH_RECOVER: "postgres: crash recovery in single-user mode",
    Kind.PG_CLONE: "postgres: clone from {host}:{port} (pg_basebackup)",
    Kind.PG_REWIND: "postgres: pg_rewind from {host}:{port}, then start as a standby",
    Kind.PG_START_STANDBY: "postgres: start as a standby of {host}:{port}",
    Kind.PG_RETARGET: "postgres: follow {host}:{port} (primary_conninfo, reload)",
    Kind.PG_START_PRIMARY: "postgres: start as the primary",
    Kind.PG_PROMOTE: "postgres: promote (standby -> primary), then CHECKPOINT",
    Kind.PG_CHECKPOINT: "postgres: CHECKPOINT (pg_control timeline is stale)",
    Kind.AWAIT: "{t}: wait until its state can be read",
}


def _runs(items: tuple[Address, ...]) -> list[tuple[Address, Address, int]]:
    """Contiguous runs of addresses with the same version and prefix: (first, last, count)."""
    runs: list[list] = []
    for a in items:
        last = runs[-1] if runs else None
        if last and last[1].prefix == a.prefix and last[1].version == a.version and last[1].value + 1 == a.value:
            last[1], last[2] = a, last[2] + 1
        else:
            runs.append([a, a, 1])
    return [(r[0], r[1], r[2]) for r in runs]


def _address_lines(a: Action, verbose: bool) -> list[str]:
    verb = {Kind.ADD_ADDRESSES: "", Kind.REMOVE_ADDRESSES: "", Kind.ADOPT_ADDRESSES: "adopt "}[a.kind]
    if verbose:
        return [f"{a.symbol} {verb}{x} on {a.target}" for x in a.items]
    runs = _runs(a.items)
    if len(runs) > _MAX_RUNS:
        return [f"{a.symbol} {verb}{len(a.items):,} addresses in {len(runs):,} runs on {a.target} (--verbose lists them)"]
    out = []
    for first, last, count in runs:
        if count == 1:
            out.append(f"{a.symbol} {verb}{first} on {a.target}")
        else:
            out.append(f"{a.symbol} {verb}{count:,} addresses {first.ip} … {last} on {a.target}")
    return out


def title(a: Action) -> str:
    if a.kind in _ADDR_KINDS:
        return _address_lines(a, verbose=False)[0][2:] if len(a.items) == 1 else f"{len(a.items):,} addresses on {a.target}"
    fields = {"t": a.target, **dict(a.params)}
    fields.setdefault("device", "?")
    fields.setdefault("host", "?")
    fields.setdefault("port", "?")
    return _TITLE[a.kind].format(**fields)


def counts(plan: Plan) -> dict[str, int]:
    c = {"add": 0, "change": 0, "remove": 0, "blocked": 0}
    for a in plan.actions:
        n = len(a.items) if a.kind in _ADDR_KINDS else 1
        if a.kind is not Kind.AWAIT:  # changes nothing: counted as blocked only
            c[{"+": "add", "~": "change", "-": "remove"}[a.symbol]] += n
        c["blocked"] += a.blocked
    return c


def human(plan: Plan, cluster: str, primary: str, verbose: bool = False) -> str:
    head = f"reconciler plan for {plan.node} (cluster {cluster}, primary: {primary})"
    lines = [head, ""]
    if plan.empty:
        lines.append("No changes. This node matches the desired state.")
    for a in plan.actions:
        if a.kind in _ADDR_KINDS:
            lines += ["  " + x for x in _address_lines(a, verbose)]
        else:
            lines.append(f"  {a.symbol} {title(a)}")
        lines.append(f"      because: {a.reason}")
        if a.loses:
            lines.append(f"      DISCARDS: {a.loses}")
        lines += [f"      waiting: {w}" for w in a.waiting_on]
    c = counts(plan)
    if not plan.empty:
        lines += ["", f"Plan: {c['add']:,} to add, {c['change']:,} to change, {c['remove']:,} to remove."]
    blocked = [a for a in plan.actions if a.blocked]
    if blocked:
        lines += ["", f"Blocked: {len(blocked)} action(s) wait on guards:"]
        lines += [f"  {a.symbol} {title(a)}: waiting: {'; '.join(a.waiting_on)}" for a in blocked]
    if plan.notes:
        lines += ["", "Notes:"] + [f"  - {n}" for n in plan.notes]
    return "\n".join(lines) + "\n"


def fingerprint(own: NodeObservation, peer: NodeObservation | None) -> str:
    h = hashlib.sha256(own.model_dump_json().encode())
    h.update(b"\0" + (peer.model_dump_json().encode() if peer is not None else b"unreachable"))
    return h.hexdigest()


def to_json(plan: Plan, cluster: str, primary: str, spec_digest: str, fp: str) -> str:
    doc = {
        "format_version": FORMAT_VERSION,
        "node": plan.node,
        "cluster": cluster,
        "primary": primary,
        "spec_digest": spec_digest,
        "observed_fingerprint": fp,
        "peer_reachable": plan.peer_reachable,
        "applyable": bool(plan.actions) and not plan.actions[0].blocked,
        "complete": not any(a.blocked for a in plan.actions),
        "summary": counts(plan),
        "changes": [_action_json(a) for a in plan.actions],
        "notes": list(plan.notes),
    }
    return json.dumps(doc, indent=2) + "\n"


def _action_json(a: Action) -> dict:
    return {
        "kind": a.kind.value,
        "symbol": a.symbol,
        "target": a.target,
        "title": title(a),
        "items": [x.text for x in a.items],
        "params": dict(a.params),
        "reason": a.reason,
        "blocked": a.blocked,
        "guards": [{"name": g.name, "holds": g.holds, "text": g.text} for g in a.guards],
        "loses": a.loses,
    }
