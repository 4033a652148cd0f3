"""Revision agreement: a node changes role only when both agents apply the same roles.

Each agent reports the roles of the spec it applies (`spec_roles`: primary and fenced)
and its git revision.  While they differ, every action that would change this node's
role (promote or demote: `changes_role` in its row, plan/kinds.py) waits, and the guard
names both revisions.  Unknown (peer unreachable, or it reports no roles) never blocks
here: the other guards handle that.
"""

from __future__ import annotations

from dataclasses import replace

from reconciler.model import NodeObservation
from reconciler.plan.actions import Action, Guard
from reconciler.plan.context import Ctx
from reconciler.spec.models import Spec


def spec_roles(spec: Spec) -> str:
    roles = f"primary={spec.primary} fenced={','.join(sorted(spec.fenced)) or 'none'}"
    return roles + (" failover=automatic" if spec.failover.mode == "automatic" else "")


def acting_primary(ctx: Ctx) -> bool:
    """This node acts as a Primary in any subsystem: DRBD, PostgreSQL or floating addresses."""
    o = ctx.own
    if any(d.configured and d.role == "Primary" for d in o.drbd.values()):
        return True
    if o.postgres is not None and o.postgres.running and o.postgres.in_recovery is False:
        return True
    desired = ctx.spec.all_addresses
    return any(a.owned and a.address in desired for i in o.interfaces.values() for a in i.addresses)


def revision_text(obs: NodeObservation | None, digest: str | None = None) -> str:
    if obs is not None and obs.revision:
        return f"revision {obs.revision[:12]}"
    digest = (obs.spec_digest if obs is not None else None) or digest
    return f"spec {digest[:12]}" if digest else "an unknown revision"


def agreement_guard(ctx: Ctx) -> Guard | None:
    """None when no role change is pending or both agree (or the peer's view is unknown)."""
    peer = ctx.peer
    if peer is None or peer.spec_roles is None:
        return None
    mine = spec_roles(ctx.spec.model)
    if peer.spec_roles == mine or acting_primary(ctx) == ctx.is_primary:
        return None
    if ctx.spec.model.failover.mode == "automatic" and peer.spec_roles.endswith(" failover=automatic"):
        return None  # both in automatic mode: the leader key in etcd orders role changes, not the revisions
    p = ctx.peer_name
    if ctx.peer_fenced:
        return Guard("same_revision", True, f"peer {p} is declared fenced: its revision is not awaited")
    return Guard(
        "same_revision",
        False,
        f"revisions disagree: {ctx.me} applies {revision_text(ctx.own, ctx.spec.digest)} ({mine}), "
        f"peer {p} applies {revision_text(peer)} ({peer.spec_roles}); the role change waits until both apply the same",
    )


def guard_role_changes(ctx: Ctx, actions: list[Action], notes: list[str]) -> tuple[list[Action], list[str]]:
    g = agreement_guard(ctx)
    if g is None:
        return actions, notes
    guarded = [replace(a, guards=a.guards + (g,)) if a.kind.row.changes_role else a for a in actions]
    if not g.holds and any(a.kind.row.changes_role for a in actions):
        notes = notes + [g.text]
    return guarded, notes
