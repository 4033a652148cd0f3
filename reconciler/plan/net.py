"""Floating addresses: the diff between the spec's addresses and the interfaces.

Rules enforced here:
- Only addresses carrying our tag (`owned`) are ever removed; an untagged address equal
  to a desired one is adopted on the Primary, and reported (never touched) elsewhere.
- An address is added only when the peer holds none of the addresses being added (tagged
  or not), and none of ours at all, and runs none of the services (`handover`); or when
  the peer still holds them but serves nothing (`handover.serves_nothing`).
- A node that is not the Primary keeps its addresses (serving nothing: its services and
  PostgreSQL stop first) until it sees the Primary holding them, so that they are never on
  no node at all; an unreachable peer, or one that cannot take them, does not hold them up.
- Removing an IPv4 subnet's primary address drops its secondaries unless
  promote_secondaries is set: the plan sets it first whenever an address must survive,
  and lists removals secondaries-first so nothing is dropped as a side effect.
"""

from __future__ import annotations

from reconciler.address import Address
from reconciler.model import AddressObs, InterfaceObs, NodeObservation
from reconciler.plan import drbd, handover, postgres, unknown
from reconciler.plan import pg_position as pos
from reconciler.plan.actions import Action, Guard, Kind
from reconciler.plan.context import Ctx


def peer_ips(peer: NodeObservation | None) -> dict[tuple[int, int], str]:
    """IP (version, value; any prefix) -> 'addr/prefix on iface' for every address the peer holds."""
    out: dict[tuple[int, int], str] = {}
    if peer is None:
        return out
    for name, iface in peer.interfaces.items():
        for a in iface.addresses:
            out[a.address.host] = f"{a.address} on {name}"
    return out


def _peer_free_guard(ctx: Ctx, items: tuple[Address, ...]) -> Guard:
    if ctx.peer is not None and not set(ctx.spec.addresses) <= set(ctx.peer.interfaces):
        return Guard("peer_holds_none", False, f"peer {ctx.peer_name} did not report its addresses")
    held = peer_ips(ctx.peer)
    clash = [held[a.host] for a in items if a.host in held]
    if not clash:
        return Guard("peer_holds_none", True, f"peer {ctx.peer_name} holds none of these addresses")
    more = f" (and {len(clash) - 1:,} more)" if len(clash) > 1 else ""
    idle = handover.serves_nothing(ctx, ctx.peer) if ctx.peer is not None else None
    if idle is not None:
        return Guard("peer_holds_none", True, f"peer {ctx.peer_name} still holds {clash[0]}{more} but {idle}: "
                                              "added here before it drops them, so none is held by no one")
    return Guard("peer_holds_none", False, f"peer {ctx.peer_name} still holds {clash[0]}{more}")


def _peer_on_its_way(ctx: Ctx, peer: NodeObservation) -> bool:
    """The Primary needs nothing more from this node to take the addresses: its own plan (the
    same pure planner, from its side of the same two observations) has no DRBD or PostgreSQL
    step that waits.  Otherwise (a standby to catch up or to clone from here first, a
    resource to connect) keeping them could wait forever: they go now, as they always did."""
    theirs = Ctx(ctx.spec, peer.node, peer, ctx.own)
    if unknown.unobserved(theirs):
        return False
    steps = drbd.plan_drbd_primary(theirs)[0] + postgres.plan_postgres(theirs)[0]
    return all(_wal_in_flight(ctx, peer, a) for a in steps if a.blocked)


def _wal_in_flight(ctx: Ctx, peer: NodeObservation, a: Action) -> bool:
    """The one wait of the Primary's that lifts without this node: its promotion waiting for
    the end of this node's shutdown checkpoint while it was streaming from here.  A clean
    fast shutdown returns only once the walsenders have had all WAL confirmed, so the
    standby already has it and only its observation, taken a moment earlier, lags."""
    own, theirs = ctx.own.postgres, peer.postgres
    if a.kind is not Kind.PG_PROMOTE or own is None or theirs is None or own.cluster_state != pos.CLEAN_PRIMARY:
        return False
    if any(g.name != "peer_not_ahead" for g in a.guards if not g.holds):
        return False
    rx = theirs.wal_receiver
    return (theirs.running and theirs.in_recovery is True and rx is not None and rx.status == "streaming"
            and rx.received_tli == own.checkpoint_timeline)


def _primary_took_them(ctx: Ctx, remove: set[Address]) -> Guard | None:
    """On a node that is not the Primary: a guard that keeps `remove` here until the observed
    Primary holds those it is to hold; None (remove now) when the peer is unreachable, is not
    the Primary, cannot take them (an interface it does not report) or is not on its way."""
    peer = ctx.peer
    if ctx.is_primary or peer is None or ctx.primary != ctx.peer_name:
        return None
    if "net" in peer.failed_parts() or not set(ctx.spec.addresses) <= set(peer.interfaces):
        return None
    if any(not peer.interfaces[n].exists for n in ctx.spec.addresses):
        return None
    if not _peer_on_its_way(ctx, peer):
        return None
    wanted = {a.host for items in ctx.spec.address_sets.values() for a in items}
    held = peer_ips(peer)
    waiting = [a for a in sorted(remove) if a.host in wanted and a.host not in held]
    if not waiting:
        return Guard("primary_holds_them", True, f"the Primary {ctx.peer_name} holds them")
    more = f" (and {len(waiting) - 1:,} more)" if len(waiting) > 1 else ""
    return Guard("primary_holds_them", False,
                 f"kept here, refusing connections, until the Primary {ctx.peer_name} holds {waiting[0]}{more}: "
                 "an address on no node makes a client's connection attempt vanish for a second")


def _removal_order(iface: InterfaceObs, remove: set[Address]) -> tuple[list[Address], bool]:
    """Removal list (secondaries first) and whether promote_secondaries is needed."""
    by_addr = {a.address: a for a in iface.addresses}
    # Subnets (network, prefix length) of the IPv4 primaries being removed; a /32 is alone
    # in its subnet, so it never takes another address with it.  Only survivors with a
    # prefix length that can match are looked at: testing each removal against every
    # survivor was O(removed x surviving), minutes for a spec edit dropping 5,000 of 10,000.
    removed_nets = {
        (a.network, a.prefix)
        for a in remove
        if a.version == 4 and not by_addr[a].secondary and a.prefix != 32
    }
    plens = {p for _net, p in removed_nets}
    need_promote = bool(plens) and any(
        (s.network, s.prefix) in removed_nets
        for s in (a.address for a in iface.addresses)
        if s.version == 4 and s.prefix in plens and s not in remove
    )
    ordered = sorted(remove, key=lambda x: (not by_addr[x].secondary, x))
    return ordered, need_promote


def _remove_actions(ctx: Ctx, name: str, iface: InterfaceObs, remove: set[Address], why: str) -> list[Action]:
    if not remove:
        return []
    took = _primary_took_them(ctx, remove)
    ordered, need_promote = _removal_order(iface, remove)
    out: list[Action] = []
    if need_promote and iface.promote_secondaries is not True:
        out.append(
            Action(
                Kind.SET_PROMOTE_SECONDARIES,
                name,
                f"{name}: removing a subnet's primary address would drop addresses that must stay "
                "(promote_secondaries is 0)",
            )
        )
    why += " (TCP connections on them are reset first, so that their clients reconnect at once)"
    out.append(Action(Kind.REMOVE_ADDRESSES, name, why, items=tuple(ordered), guards=(took,) if took else ()))
    return out


def plan_addresses(ctx: Ctx) -> tuple[list[Action], list[str]]:
    """Address actions for this node, and notes about addresses it must leave alone."""
    desired = ctx.spec.address_sets if ctx.is_primary else {}
    actions: list[Action] = []
    notes: list[str] = []
    floating = ctx.spec.all_addresses
    for name in sorted(set(ctx.spec.addresses) | set(ctx.own.interfaces)):
        if name not in ctx.spec.addresses:
            continue  # only managed interfaces are observed and touched
        want = desired.get(name, frozenset())
        iface = ctx.own.interfaces.get(name, InterfaceObs(exists=False))
        if not iface.exists:
            if want:
                actions.append(_missing_iface(ctx, name, want))
            continue
        owned = {a.address for a in iface.addresses if a.owned}
        # all of them ours (the Primary's usual case): no second pass for the others
        foreign = {a.address for a in iface.addresses if not a.owned} if len(owned) < len(iface.addresses) else set()
        remove = owned - want
        why = (
            f"{ctx.me} is not the Primary: floating addresses go"
            if not ctx.is_primary
            else "tagged as ours but no longer in the spec"
        )
        actions += _remove_actions(ctx, name, iface, remove, why)
        if not ctx.is_primary:
            notes += _foreign_copies(name, foreign & floating)
            continue
        # owned - remove is owned & want: when it is as large as want, nothing is missing (the
        # converged case, answered without a second pass over every address)
        missing = frozenset() if len(owned) - len(remove) == len(want) else want - owned - foreign
        actions += _add_actions(ctx, name, tuple(sorted(want & foreign)), Kind.ADOPT_ADDRESSES)
        actions += _add_actions(ctx, name, tuple(sorted(missing)), Kind.ADD_ADDRESSES)
    return actions, notes


def _add_actions(ctx: Ctx, name: str, items: tuple[Address, ...], kind: Kind) -> list[Action]:
    if not items:
        return []
    reach = ctx.peer_reachable_guard("it holds none of these addresses")
    if reach is not None:
        guards = [reach]
    else:  # the second guard is shown only when the first, more specific one holds
        free = _peer_free_guard(ctx, items)
        guards = [free, handover.peer_released(ctx)] if free.holds else [free]
    why = (
        f"{ctx.me} is the Primary and these addresses are missing"
        if kind is Kind.ADD_ADDRESSES
        else "present but not tagged as ours: adopt (re-tag) instead of adding a duplicate"
    )
    return [Action(kind, name, why, items=items, guards=tuple(guards))]


def _missing_iface(ctx: Ctx, name: str, want: frozenset[Address]) -> Action:
    items = tuple(sorted(want))
    g = Guard("interface_exists", False, f"interface {name} does not exist on {ctx.me}")
    return Action(Kind.ADD_ADDRESSES, name, f"{ctx.me} is the Primary", items=items, guards=(g,))


def _foreign_copies(name: str, clash: set[Address]) -> list[str]:
    return [
        f"{a} on {name} is a floating address but was not added by reconciler; it is left alone: "
        f"remove it by hand (ip address del {a} dev {name}) so the Primary can hold it"
        for a in sorted(clash)
    ]


def owned_addresses(obs: NodeObservation) -> list[AddressObs]:
    return [a for i in obs.interfaces.values() for a in i.addresses if a.owned]
