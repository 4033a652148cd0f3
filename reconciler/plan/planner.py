"""The planner: a pure function of (spec, node, own observation, peer observation).

Order on the node that must be Primary (each step guarded on the peer's observed state):
  DRBD up/connect -> DRBD Primary -> mount -> PostgreSQL promote (+CHECKPOINT)
  -> floating addresses added (and announced) -> services started in spec order.
  Addresses and services wait until the peer has released all of its own (`handover`).
Order on any other node (demotion):
  services stopped in reverse -> PostgreSQL CHECKPOINT + fast stop -> unmount -> DRBD
  Secondary -> floating addresses removed once the Primary holds them (their TCP
  connections reset first) -> DRBD up/connect -> rejoin as a standby.
A writable PostgreSQL stops while its addresses are still here: its clients receive its
own "terminating connection" and FIN, new connection attempts are refused at once instead
of vanishing (a lost SYN costs a client a 1 s retransmission).  The peer waits for this
shutdown (and for the DRBD Secondary), not for the addresses: it promotes and adds the
addresses while they are still here, serving nothing, and only then are they removed here
(`handover`), so that there is no moment in which no node holds them.
Nothing is planned from a partial observation: a part of this node's state that could
not be read (or a PostgreSQL that is starting or stopping) is an AWAIT that blocks (see
`unknown`).  The executor runs the first action only and observes again, so a later action's own
preconditions are those the earlier actions establish.  A role change also waits until
both agents apply the same roles (see `agreement`).
"""

from __future__ import annotations

from reconciler.model import NodeObservation, ServiceObs
from reconciler.plan import agreement, drbd, handover, leadership, net, postgres, unknown
from reconciler.plan.actions import Action, Kind, Plan
from reconciler.plan.context import Ctx
from reconciler.spec import LoadedSpec


class PlanError(ValueError):
    """The inputs cannot be planned (e.g. the node is not in the spec)."""


def plan(spec: LoadedSpec, node: str, own: NodeObservation, peer: NodeObservation | None) -> Plan:
    if node not in spec.model.nodes:
        raise PlanError(f"node {node!r} is not in the spec (nodes: {', '.join(spec.model.nodes)})")
    if own.node != node:
        raise PlanError(f"the observation is of node {own.node!r}, not {node!r}")
    if peer is not None and peer.node != spec.model.peer_of(node):
        raise PlanError(f"the peer observation is of node {peer.node!r}, not {spec.model.peer_of(node)!r}")
    ctx = Ctx(spec, node, own, peer)
    waits = unknown.unobserved(ctx)
    if waits:  # never plan from a partial observation (see `unknown`)
        actions, notes = waits, list[str]()
    else:
        actions, notes = _primary(ctx) if ctx.is_primary else _secondary(ctx)
        if leadership.automatic(spec.model):
            actions, notes = _automatic(ctx, actions, notes)
        actions, notes = agreement.guard_role_changes(ctx, actions, notes)
    if peer is None and ctx.peer_name is not None:
        notes.insert(0, f"peer {ctx.peer_name} is unreachable: every guard that needs its state waits")
    return Plan(node=node, actions=tuple(actions), notes=tuple(notes), peer_reachable=ctx.peer_known)


_DEMOTION = (Kind.STOP_SERVICE, Kind.PG_STOP, Kind.UNMOUNT, Kind.DRBD_SECONDARY)


def _runnable_first(coord: list[Action], rest: list[Action]) -> list[Action]:
    """Coordination steps that can run go first (a takeover, or withdrawing the candidate, never
    waits behind a blocked step); those that wait go last, so they block nothing."""
    return [a for a in coord if not a.blocked] + rest + [a for a in coord if a.blocked]


def _automatic(ctx: Ctx, actions: list[Action], notes: list[str]) -> tuple[list[Action], list[str]]:
    """Automatic failover: the etcd steps around the role's plan (see `leadership`)."""
    r, own, spec = ctx.role, ctx.own, ctx.spec.model
    notes = leadership.notes(r, own) + notes
    if r.holder and not r.handing_over:
        before, after = leadership.holder_steps(spec, ctx.me, own)
        return before + _runnable_first(after, leadership.confirm_promotions(own, actions)), notes
    if r.handing_over:  # released right after the demotion proper: the rest (addresses, rejoining) needs the peer
        at = next((i for i, a in enumerate(actions) if a.kind not in _DEMOTION), len(actions))
        rel = leadership.release(own, leadership.serving(own))
        return actions[:at] + [rel] + actions[at:], notes
    coord = leadership.acquire(spec, ctx.me, own, ctx.peer)
    if r.stale_key:
        coord.append(leadership.release(own, leadership.serving(own), stale=True))
    return _runnable_first(coord, actions) + leadership.disarm(own, agreement.acting_primary(ctx)), notes


def _services(ctx: Ctx, start: bool) -> list[Action]:
    out = []
    services = ctx.spec.model.services if start else list(reversed(ctx.spec.model.services))
    released = handover.peer_released(ctx) if start else None
    for s in services:
        active = ctx.own.services.get(s.name, ServiceObs(active=False)).active
        if start and not active:
            out.append(Action(Kind.START_SERVICE, s.name, f"{ctx.me} is the Primary and {s.name} is not running",
                              guards=(released,) if released is not None else ()))
        elif not start and active:
            out.append(Action(Kind.STOP_SERVICE, s.name, f"{ctx.me} is not the Primary: {s.name} runs on the Primary only"))
    return out


def _primary(ctx: Ctx) -> tuple[list[Action], list[str]]:
    actions, notes = drbd.plan_drbd_primary(ctx)
    pg_actions, pg_notes = postgres.plan_postgres(ctx)
    addr_actions, addr_notes = net.plan_addresses(ctx)
    actions = actions + pg_actions + addr_actions + _services(ctx, start=True)
    return actions, notes + pg_notes + addr_notes


def _secondary(ctx: Ctx) -> tuple[list[Action], list[str]]:
    addr_actions, addr_notes = net.plan_addresses(ctx)
    drbd_actions, drbd_notes = drbd.plan_drbd_secondary(ctx)
    pg_actions, pg_notes = postgres.plan_postgres(ctx)
    pg_stop = [a for a in pg_actions if a.kind is Kind.PG_STOP]  # see the module's docstring
    pg_rest = [a for a in pg_actions if a.kind is not Kind.PG_STOP]
    demote = [a for a in drbd_actions if a.kind is Kind.DRBD_SECONDARY]  # before the addresses: the
    drbd_rest = [a for a in drbd_actions if a.kind is not Kind.DRBD_SECONDARY]  # Primary needs it first
    actions = (_services(ctx, start=False) + pg_stop + drbd.plan_unmounts(ctx) + demote + addr_actions + drbd_rest
               + pg_rest)
    return actions, addr_notes + drbd_notes + pg_notes
