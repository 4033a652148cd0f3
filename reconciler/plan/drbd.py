"""DRBD resources and their mounts.

A resource is brought up and connected on both nodes; it is Primary (and mounted) only
on the spec's Primary.  Promotion needs local UpToDate data, a peer that is not Primary,
and a Connected resource (a disconnected 8.4 Secondary still calls itself UpToDate
even when the other side wrote after the link broke) - unless the peer is declared
fenced.  Never --force, never --discard-my-data: a split brain is reported with the
commands an operator runs, and waits.
"""

from __future__ import annotations

from reconciler.model import DrbdObs
from reconciler.plan.actions import Action, Guard, Kind
from reconciler.plan.context import Ctx
from reconciler.plan.kinds import DrbdMount
from reconciler.spec.models import DrbdResource

CONNECTED = {"Connected", "SyncSource", "PausedSyncS", "VerifyS", "VerifyT", "Ahead", "Behind"}


def split_brain_commands(res: str, victim: str, survivor: str) -> str:
    return (
        f"on {victim} (its changes since the split are discarded): drbdadm disconnect {res}; "
        f"drbdadm secondary {res}; drbdadm connect --discard-my-data {res}; "
        f"on {survivor}: drbdadm connect {res}"
    )


def _bring_up(ctx: Ctx, r: DrbdResource, o: DrbdObs) -> tuple[list[Action], list[str]]:
    if not o.configured:
        return [Action(Kind.DRBD_UP, r.name, f"resource {r.name} is not up on {ctx.me}")], []
    if o.split_brain:
        survivor = ctx.primary if ctx.primary != "none" else ctx.me
        victim = ctx.peer_name if survivor == ctx.me else ctx.me
        cmds = split_brain_commands(r.name, victim or "the victim", survivor)
        # the commands go into the guard too: the agent's log shows waiting guards, not plan notes
        g = Guard("no_split_brain", False,
                  f"split brain on {r.name}: an operator decides whose data survives; to resolve: {cmds}")
        act = Action(Kind.DRBD_CONNECT, r.name, f"{r.name} is StandAlone after a split brain", guards=(g,))
        return [act], [f"DRBD {r.name}: split brain detected; nothing is discarded automatically. To resolve: {cmds}"]
    if o.connection == "StandAlone":
        return [Action(Kind.DRBD_CONNECT, r.name, f"{r.name} is StandAlone on {ctx.me}")], []
    return [], []


def _promote_guards(ctx: Ctx, r: DrbdResource, o: DrbdObs) -> tuple[Guard, ...]:
    guards: list[Guard] = []
    disk = o.disk if o.configured else "unknown until the resource is up"
    guards.append(Guard("local_uptodate", o.disk == "UpToDate", f"local disk of {r.name} is {disk}, needs UpToDate"))
    reach = ctx.peer_reachable_guard(f"it is not DRBD Primary on {r.name}")
    if reach is not None:
        guards.append(reach)
    peer_obs = ctx.peer.drbd.get(r.name) if ctx.peer is not None else None
    if ctx.peer is not None and peer_obs is None:
        guards.append(Guard("peer_not_primary", False, f"peer {ctx.peer_name} did not report the state of {r.name}"))
    else:
        peer_primary = o.peer_role == "Primary" or (peer_obs is not None and peer_obs.role == "Primary")
        guards.append(
            Guard("peer_not_primary", not peer_primary, f"peer {ctx.peer_name} is still DRBD Primary on {r.name}")
        )
    if ctx.peer_name is not None and not ctx.peer_fenced and not ctx.peer_lease_ended:
        connected = o.configured and o.connection in CONNECTED
        guards.append(
            Guard(
                "connected",
                connected,
                f"{r.name} is {o.connection if o.configured else 'not up'}, not Connected: promoting now "
                f"could diverge from {ctx.peer_name}'s data",
            )
        )
    return tuple(guards)


def _mount_action(ctx: Ctx, r: DrbdResource) -> tuple[list[Action], list[str]]:
    if r.mount is None:
        return [], []
    m = ctx.own.mounts.get(r.mount)
    if m is None:
        why = f"{r.name} must be mounted on {r.mount} on the Primary"
        return [Action(Kind.MOUNT, r.mount, why, payload=DrbdMount(r.name, r.device))], []
    if m.source != r.device:
        g = Guard("mount_point_free", False, f"{r.mount} has {m.source} mounted, not {r.device}")
        act = Action(Kind.MOUNT, r.mount, f"{r.name} must be mounted on {r.mount}", guards=(g,))
        return [act], []
    return [], []


def plan_drbd_primary(ctx: Ctx) -> tuple[list[Action], list[str]]:
    actions: list[Action] = []
    notes: list[str] = []
    for r in ctx.spec.model.drbd:
        o = ctx.own.drbd.get(r.name, DrbdObs(configured=False))
        a, n = _bring_up(ctx, r, o)
        actions += a
        notes += n
        if o.role != "Primary":
            why = f"spec says {ctx.me} is Primary; {r.name} is {o.role if o.configured else 'down'} here"
            actions.append(Action(Kind.DRBD_PRIMARY, r.name, why, guards=_promote_guards(ctx, r, o)))
        a, n = _mount_action(ctx, r)
        actions += a
        notes += n
    return actions, notes


def plan_unmounts(ctx: Ctx) -> list[Action]:
    out = []
    for r in reversed(ctx.spec.model.drbd):
        if r.mount and r.mount in ctx.own.mounts:
            out.append(Action(Kind.UNMOUNT, r.mount, f"{ctx.me} is not the Primary: {r.mount} must not be mounted"))
    return out


def plan_drbd_secondary(ctx: Ctx) -> tuple[list[Action], list[str]]:
    actions: list[Action] = []
    notes: list[str] = []
    for r in ctx.spec.model.drbd:
        o = ctx.own.drbd.get(r.name, DrbdObs(configured=False))
        if o.configured and o.role == "Primary":
            why = f"{ctx.me} is not the Primary: {r.name} must be Secondary"
            actions.append(Action(Kind.DRBD_SECONDARY, r.name, why))
        a, n = _bring_up(ctx, r, o)
        actions += a
        notes += n
    return actions, notes
