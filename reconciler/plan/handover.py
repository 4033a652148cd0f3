"""The Primary's services and floating addresses change hands as one.

A node takes none of them (starts no service, adds or adopts no floating address) until
the peer is observed to run none of its services and to hold none of the addresses this
tool tagged, on every interface it reports: old ones included, not only those being
added.  Checking item by item is not enough: a commit that switches the Primary *and*
changes the address list leaves the old Primary holding none of the *new* addresses while
its services still run, and a spec with services but no floating addresses (or no DRBD
and no PostgreSQL) has nothing else between the two nodes' services.

An unreachable peer holds it, unless the operator declared that peer fenced.  An observed
peer is always checked, fenced or not: an observation beats a declaration.

The one overlap allowed: the floating addresses may stay on the old Primary while it
*serves nothing* (`serves_nothing`: its PostgreSQL observed stopped, none of the services
running), so the new Primary adds them before the old one drops them.  A connection attempt
in that moment reaches either the old node, which refuses it at once (RST: the client
retries), or the new one, which serves it; none vanishes (a SYN sent to an address held by
no one is lost and retransmitted only after Linux's 1 s initial RTO).  The old node keeps
them until it sees the peer holding them (`net`), so there is no moment in which no one
holds them.  Two nodes that could both answer on one address never exist: that is the
invariant (tests/sim), not "never one address on two nodes".
"""

from __future__ import annotations

from reconciler.model import NodeObservation
from reconciler.plan.actions import Guard
from reconciler.plan.context import Ctx

NAME = "peer_released"


def _more(items: list[str]) -> str:
    return items[0] + (f" (and {len(items) - 1:,} more)" if len(items) > 1 else "")


def serves_nothing(ctx: Ctx, obs: NodeObservation) -> str | None:
    """Why `obs`'s node answers no client on any address (PostgreSQL observed stopped, or not
    in the spec, and none of the services observed running); None when it may."""
    failed = obs.failed_parts()
    if "services" in failed or any(s.active for s in obs.services.values()):
        return None
    if ctx.spec.model.postgres is None:
        return "runs none of the services"
    if "postgres" in failed or obs.postgres is None or obs.postgres.running:
        return None
    return "runs none of the services and its PostgreSQL is stopped"


def peer_released(ctx: Ctx) -> Guard:
    """Holds when the peer runs none of its services and holds none of our addresses, or holds
    them but serves nothing (see the module doc)."""
    reach = ctx.peer_reachable_guard("it runs none of the services and holds none of the floating addresses")
    if reach is not None:
        return reach
    p, peer = ctx.peer_name, ctx.peer
    if peer is None:  # no peer in the spec at all
        return Guard(NAME, True, "no peer")
    failed = peer.failed_parts()
    unread = [part for part in ("services", "net") if part in failed]
    if unread:
        return Guard(NAME, False, f"peer {p} could not observe its {' and '.join(unread)}: "
                                  f"{failed[unread[0]]}")
    missing = sorted(set(ctx.spec.addresses) - set(peer.interfaces))
    if missing:
        return Guard(NAME, False, f"peer {p} did not report its addresses on {', '.join(missing)}")
    running = sorted(name for name, s in peer.services.items() if s.active)
    held = [f"{a.address} on {name}" for name, i in sorted(peer.interfaces.items()) for a in i.addresses if a.owned]
    if not (running or held):
        return Guard(NAME, True, f"peer {p} runs none of the services and holds none of the floating addresses")
    idle = serves_nothing(ctx, peer) if held else None
    if idle is not None:
        return Guard(NAME, True, f"peer {p} still holds {_more(held)} but {idle}: it refuses connections "
                                 f"until it drops them, once they are here")
    still = ([f"runs {_more(running)}"] if running else []) + ([f"holds {_more(held)}"] if held else [])
    return Guard(NAME, False, f"peer {p} still {' and '.join(still)}: the Primary's services and addresses "
                              f"move only once the peer has released all of them")
