"""What an action leaves behind, read from the next observation of its node.

The executor reports what the tool said; the loop then observes again, and `unmet` says
whether the action's effect shows there (a service that crashed right after its start, a
connect that fell back to StandAlone, an address that someone removed again).  Pure: a
function of the action and the new observation.  The answer is None when the effect holds,
and also when the observation cannot tell (that part of it failed, or PostgreSQL does not
answer yet): only what is seen to be wrong is reported.  A kind whose effect cannot be read
from an observation at all says so in NOT_OBSERVABLE.
"""

from __future__ import annotations

from collections.abc import Callable

from reconciler.address import Address
from reconciler.model import NodeObservation, PostgresObs
from reconciler.plan.actions import Action, Kind
from reconciler.plan.kinds import ReplicationSource
from reconciler.plan.pg_position import CLEAN_PRIMARY

Check = Callable[[Action, NodeObservation], "str | None"]

NOT_OBSERVABLE: dict[Kind, str] = {
    Kind.AWAIT: "never executed: it only waits until the state can be read",
}


def _service(active: bool) -> Check:
    def check(a: Action, o: NodeObservation) -> str | None:
        s = o.services.get(a.target)
        if s is None or s.active == active:
            return None
        return f"service {a.target} is {'not ' if active else 'still '}active"
    return check


def _promote_secondaries(a: Action, o: NodeObservation) -> str | None:
    i = o.interfaces.get(a.target)
    if i is None or i.promote_secondaries is not False:
        return None
    return f"promote_secondaries is still 0 on {a.target}"


def _held(a: Action, o: NodeObservation) -> set[Address] | None:
    """The addresses of `a.items` held as ours on `a.target`; None when not observed."""
    i = o.interfaces.get(a.target)
    if i is None:
        return None
    owned: set[Address] = {x.address for x in i.addresses if x.owned} if i.exists else set()
    return {x for x in a.items if x in owned}


def _count(missing: list[Address], total: int) -> str:
    more = f" (and {len(missing) - 1:,} more of {total:,})" if len(missing) > 1 else ""
    return f"{missing[0]}{more}"


def _present(a: Action, o: NodeObservation) -> str | None:
    held = _held(a, o)
    if held is None or len(held) == len(a.items):
        return None
    missing = [x for x in a.items if x not in held]
    return f"not held as ours on {a.target}: {_count(missing, len(a.items))}"


def _absent(a: Action, o: NodeObservation) -> str | None:
    held = _held(a, o)
    if not held:
        return None
    return f"still held on {a.target}: {_count([x for x in a.items if x in held], len(a.items))}"


def _mounted(want: bool) -> Check:
    def check(a: Action, o: NodeObservation) -> str | None:
        m = o.mounts.get(a.target)
        if (m is not None) == want:
            return None
        return f"{a.target} is still mounted ({m.source})" if m is not None else f"{a.target} is not mounted"
    return check


def _drbd(a: Action, o: NodeObservation) -> str | None:
    d = o.drbd.get(a.target)
    if d is None:
        return None
    if not d.configured:
        return None if a.kind is Kind.DRBD_SECONDARY else f"{a.target} is not up"
    if a.kind is Kind.DRBD_CONNECT and d.connection == "StandAlone":
        return f"{a.target} is still StandAlone"
    if a.kind is Kind.DRBD_PRIMARY and d.role != "Primary":
        return f"{a.target} is {d.role}, not Primary"
    if a.kind is Kind.DRBD_SECONDARY and d.role == "Primary":
        return f"{a.target} is still Primary"
    return None


def _pg(check: Callable[[Action, PostgresObs], str | None]) -> Check:
    def on(a: Action, o: NodeObservation) -> str | None:
        return None if o.postgres is None else check(a, o.postgres)
    return on


def _stopped(a: Action, pg: PostgresObs) -> str | None:
    return "PostgreSQL is still running" if pg.running else None


def _recovered(a: Action, pg: PostgresObs) -> str | None:
    if pg.running:
        return "PostgreSQL is running"
    if pg.cluster_state is None or pg.cluster_state == CLEAN_PRIMARY:
        return None
    return f"pg_control says {pg.cluster_state!r}, not {CLEAN_PRIMARY!r}"


def _standby_ready(a: Action, pg: PostgresObs) -> str | None:
    """pg_basebackup and pg_rewind leave a stopped data directory that starts as a standby."""
    if pg.data_dir_empty:
        return "the data directory is still empty"
    return None if pg.standby_signal else "standby.signal is missing"


def _standby(a: Action, pg: PostgresObs) -> str | None:
    if not pg.running:
        return "PostgreSQL is not running"
    return "PostgreSQL is writable, not a standby" if pg.in_recovery is False else None


def _follows(a: Action, pg: PostgresObs) -> str | None:
    bad = _standby(a, pg)
    if bad is not None:
        return bad
    src = a.payload
    if not isinstance(src, ReplicationSource):
        return None  # refused by the executor, which reported it
    seen = (pg.conninfo_host, pg.conninfo_port)
    return None if seen == (src.host, src.port) else f"the standby follows {seen[0]}:{seen[1]}, not {src.host}:{src.port}"


def _writable(a: Action, pg: PostgresObs) -> str | None:
    if not pg.running:
        return "PostgreSQL is not running"
    return "PostgreSQL is still in recovery" if pg.in_recovery is True else None  # None: not answering yet


def _checkpointed(a: Action, pg: PostgresObs) -> str | None:
    if pg.control_timeline is None or pg.timeline is None or pg.control_timeline >= pg.timeline:
        return None
    return f"pg_control still shows timeline {pg.control_timeline}, the server runs on {pg.timeline}"


# kind -> (the part of the observation it reads, the check); a failed part tells nothing
def _coord(a: Action, o: NodeObservation) -> str | None:
    """The leadership steps, read back from the next etcd read and the keeper's state."""
    c = o.coord
    if c is None:
        return None
    k = a.kind
    if k is Kind.WATCHDOG_ARM and not c.watchdog_armed:
        return "the watchdog is not armed"
    if k is Kind.WATCHDOG_DISARM and c.watchdog_armed:
        return "the watchdog is still armed"
    if not c.reachable:
        return None
    if k is Kind.COORD_ACQUIRE and (c.held_epoch is None or c.leader != o.node):
        return "the leader key is not held by this node"
    if k is Kind.COORD_RELEASE and c.leader == o.node:
        return "the leader key still names this node"
    if k is Kind.COORD_PUBLISH and c.candidate != a.target:
        return f"{a.target} is not the published candidate"
    if k is Kind.COORD_WITHDRAW and c.candidate == a.target:
        return f"{a.target} is still the published candidate"
    return None


def _sync(a: Action, pg: PostgresObs) -> str | None:
    if a.kind is Kind.PG_SYNC_ON and a.target not in pg.sync_names:
        return f"synchronous_standby_names does not name {a.target}"
    if a.kind is Kind.PG_SYNC_OFF and pg.sync_names:
        return f"synchronous_standby_names still names {', '.join(pg.sync_names)}"
    return None


CHECKS: dict[Kind, tuple[str, Check]] = {
    Kind.STOP_SERVICE: ("services", _service(False)),
    Kind.START_SERVICE: ("services", _service(True)),
    Kind.SET_PROMOTE_SECONDARIES: ("net", _promote_secondaries),
    Kind.REMOVE_ADDRESSES: ("net", _absent),
    Kind.ADOPT_ADDRESSES: ("net", _present),
    Kind.ADD_ADDRESSES: ("net", _present),
    Kind.UNMOUNT: ("mounts", _mounted(False)),
    Kind.MOUNT: ("mounts", _mounted(True)),
    Kind.DRBD_UP: ("drbd", _drbd),
    Kind.DRBD_CONNECT: ("drbd", _drbd),
    Kind.DRBD_SECONDARY: ("drbd", _drbd),
    Kind.DRBD_PRIMARY: ("drbd", _drbd),
    Kind.PG_STOP: ("postgres", _pg(_stopped)),
    Kind.PG_CRASH_RECOVER: ("postgres", _pg(_recovered)),
    Kind.PG_CLONE: ("postgres", _pg(_standby_ready)),
    Kind.PG_REWIND: ("postgres", _pg(_standby_ready)),
    Kind.PG_START_STANDBY: ("postgres", _pg(_standby)),
    Kind.PG_RETARGET: ("postgres", _pg(_follows)),
    Kind.PG_START_PRIMARY: ("postgres", _pg(_writable)),
    Kind.PG_PROMOTE: ("postgres", _pg(_writable)),
    Kind.PG_CHECKPOINT: ("postgres", _pg(_checkpointed)),
    Kind.COORD_ACQUIRE: ("coord", _coord),
    Kind.COORD_RELEASE: ("coord", _coord),
    Kind.COORD_PUBLISH: ("coord", _coord),
    Kind.COORD_WITHDRAW: ("coord", _coord),
    Kind.PG_SYNC_ON: ("postgres", _pg(_sync)),
    Kind.PG_SYNC_OFF: ("postgres", _pg(_sync)),
    Kind.WATCHDOG_ARM: ("coord", _coord),
    Kind.WATCHDOG_DISARM: ("coord", _coord),
}


def unmet(a: Action, o: NodeObservation) -> str | None:
    """Why the effect of `a` does not show in `o`; None when it does or `o` cannot tell."""
    row = CHECKS.get(a.kind)
    if row is None:
        return None
    part, check = row
    if part in o.failed_parts():
        return None
    return check(a, o)
