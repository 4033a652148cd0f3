"""What this node's observation could not tell, as actions that wait.

A driver that fails leaves its part of the observation at an "unknown" value (no
interfaces, no services, no PostgreSQL) and says why in `errors`.  Planning from those
values would be planning from a guess: no addresses seen is not no addresses held, and no
service seen running is not every service stopped.  So while any part is unknown, the
plan is only an AWAIT per unknown part: blocked, never executed, gone once the driver
reads its state again.  Nothing is changed on a partial view, and "nothing to do" is
never said of one.
"""

from __future__ import annotations

from reconciler.model import PostgresObs
from reconciler.plan.actions import Action, Guard, Kind
from reconciler.plan.context import Ctx

WHY = "the plan acts only on what it could observe"


def _await(ctx: Ctx, target: str, what: str, error: str | None) -> Action:
    text = f"{what} on {ctx.me} could not be observed: {error or 'no reading'}"
    return Action(Kind.AWAIT, target, WHY, guards=(Guard("observed", False, text),))


def unobserved(ctx: Ctx) -> list[Action]:
    s, o, err = ctx.spec.model, ctx.own, ctx.own.failed_parts()
    out = []
    if "net" in err and ctx.spec.addresses:
        out.append(_await(ctx, "addresses", "the floating addresses", err["net"]))
    if s.drbd and any(r.name not in o.drbd for r in s.drbd):  # a missing module still reports each resource
        out.append(_await(ctx, "drbd", "DRBD", err.get("drbd")))
    if "mounts" in err and s.drbd:
        out.append(_await(ctx, "mounts", "the mounts", err["mounts"]))
    if s.postgres is not None and o.postgres is None:
        out.append(_await(ctx, "postgres", "PostgreSQL", err.get("postgres")))
    if "services" in err and s.services:
        out.append(_await(ctx, "services", "the services", err["services"]))
    if s.failover.mode == "automatic" and o.coord is None:
        out.append(_await(ctx, "leadership", "the leadership (etcd, lease keeper)", err.get("coord")))
    return out


def not_answering(ctx: Ctx, pg: PostgresObs) -> Action:
    """PostgreSQL runs but refuses queries: starting up (crash or archive recovery, or not
    yet consistent) or shutting down.  Whether it is a primary or a standby, and where its
    WAL ends, are read once it answers; until then nothing is done to it."""
    state = pg.cluster_state or "state unknown"
    g = Guard("pg_answers", False, f"PostgreSQL on {ctx.me} is running but not accepting connections yet "
                                   f"(starting up or shutting down; pg_control: {state}): its role is read once it does")
    return Action(Kind.AWAIT, "postgres", "PostgreSQL's role and WAL position are unknown while it answers no query",
                  guards=(g,))
