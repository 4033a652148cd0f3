"""Plan output: Terraform-style text for people, versioned JSON for programs.

Thousands of addresses collapse into contiguous runs (`+ 9,999 addresses 10.1.0.1 …
10.1.39.15/16 on eth0`); `verbose` lists every address.  Counts: every address is one
add/remove; every other action is one add (+), change (~) or remove (-).
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.address import Address
from reconciler.plan.actions import Action, Kind, Plan

FORMAT_VERSION = "1.0"
_MAX_RUNS = 12


def _runs(items: tuple[Address, ...]) -> list[tuple[Address, Address, int]]:
    """Contiguous runs of addresses with the same version and prefix: (first, last, count)."""
    runs: list[list[Any]] = []
    for a in items:
        last = runs[-1] if runs else None
        if last and last[1].prefix == a.prefix and last[1].version == a.version and last[1].value + 1 == a.value:
            last[1], last[2] = a, last[2] + 1
        else:
            runs.append([a, a, 1])
    return [(r[0], r[1], r[2]) for r in runs]


def _address_lines(a: Action, verbose: bool) -> list[str]:
    def line(addresses: str) -> str:
        return f"{a.symbol} " + a.kind.row.title.format(addresses=addresses, t=a.target)

    if verbose:
        return [line(x.text) for x in a.items]
    runs = _runs(a.items)
    if len(runs) > _MAX_RUNS:
        return [line(f"{len(a.items):,} addresses in {len(runs):,} runs") + " (--verbose lists them)"]
    out = []
    for first, last, count in runs:
        if count == 1:
            out.append(line(f"{first}"))
        else:
            out.append(line(f"{count:,} addresses {first.ip} … {last}"))
    return out


def title(a: Action) -> str:
    if a.kind.row.addresses:
        return _address_lines(a, verbose=False)[0][2:] if len(a.items) == 1 else f"{len(a.items):,} addresses on {a.target}"
    fields = {"t": a.target, **a.payload_text}
    fields.setdefault("device", "?")
    fields.setdefault("host", "?")
    fields.setdefault("port", "?")
    return a.kind.row.title.format(**fields)


def counts(plan: Plan) -> dict[str, int]:
    c = {"add": 0, "change": 0, "remove": 0, "blocked": 0}
    for a in plan.actions:
        n = len(a.items) if a.kind.row.addresses else 1
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
        if a.kind.row.addresses:
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


def _action_json(a: Action) -> dict[str, Any]:
    return {
        "kind": a.kind.value,
        "symbol": a.symbol,
        "target": a.target,
        "title": title(a),
        "items": [x.text for x in a.items],
        "params": a.payload_text,
        "reason": a.reason,
        "blocked": a.blocked,
        "guards": [{"name": g.name, "holds": g.holds, "text": g.text} for g in a.guards],
        "loses": a.loses,
    }
