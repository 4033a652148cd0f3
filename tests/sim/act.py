"""Effects of the planner's actions on the simulated world, as the real tools behave.

Each action is a list of micro-steps so that an agent can be killed part-way through one
(`limit`).  A refusal the real tool would give raises `Refused`.
"""

from __future__ import annotations

from collections.abc import Callable

from reconciler.address import Address
from reconciler.plan.actions import Action, Kind
from reconciler.plan.kinds import DrbdMount, ReplicationSource
from reconciler.spec import LoadedSpec
from tests.sim.observe import connection_state, is_prefix, streaming
from tests.sim.world import Addr, Drbd, Iface, Node, World


class Refused(Exception):
    pass


def _follows(a: Action) -> tuple[str, int]:
    s = a.payload
    return (s.host, s.port) if isinstance(s, ReplicationSource) else ("", 0)


def _source(world: World, spec: LoadedSpec, a: Action) -> Node | None:
    host = a.payload.host if isinstance(a.payload, ReplicationSource) else None
    for name, n in spec.model.nodes.items():
        if n.address == host:
            return world.nodes[name]
    return None


def _check_data_safe(world: World, node: Node, what: str) -> None:
    if world.fenced_ever:
        return
    tokens = {t for _, t in node.pg.wal}
    lost = [c for c in world.acked_commits if c not in tokens]
    if lost and what == "pg":
        world.violations.append(f"{node.name} made writable without acknowledged commits {lost[:3]}")


def pg_stop(world: World, spec: LoadedSpec, node: Node) -> None:
    pg = node.pg
    if not pg.running:
        return
    if pg.standby:
        pg.running, pg.state = False, "shut down in recovery"
        return
    pg.wal.append((pg.tli, world.token("ckpt")))
    pg.ckpt_lsn = len(pg.wal) - 1
    for other in world.nodes.values():  # walsenders drain to *connected* standbys only
        if other is not node and streaming(world, spec, other) is node:
            other.pg.wal = list(pg.wal)
            other.pg.history = list(pg.history)
    pg.running, pg.state = False, "shut down"


def _crash_recover(world: World, node: Node) -> None:
    pg = node.pg
    if pg.running:
        raise Refused("postmaster is running")
    pg.wal.append((pg.tli, world.token("ckpt")))
    pg.ckpt_lsn, pg.state = len(pg.wal) - 1, "shut down"


def _start(world: World, node: Node, standby: bool, a: Action) -> None:
    pg = node.pg
    if pg.running:
        return
    if pg.empty:
        raise Refused("data directory is empty")
    if standby:
        pg.standby_signal, pg.follows = True, _follows(a)
    else:
        pg.standby_signal = False
        if pg.state != "shut down":  # crash recovery on start
            pg.wal.append((pg.tli, world.token("ckpt")))
        _check_data_safe(world, node, "pg")
    pg.running, pg.standby = True, standby
    pg.state = "in archive recovery" if standby else "in production"


def _promote(world: World, node: Node) -> None:
    pg = node.pg
    if not (pg.running and pg.standby):
        raise Refused("recovery is not in progress")
    if pg.paused:
        raise Refused("replay paused")
    new = pg.known_tlis + 1
    pg.history.append((pg.tli, len(pg.wal)))
    pg.wal.append((new, world.token("eor")))
    pg.standby = pg.standby_signal = False
    pg.state = "in production"
    _check_data_safe(world, node, "pg")


def _rewind(world: World, spec: LoadedSpec, node: Node, a: Action) -> None:
    src = _source(world, spec, a)
    pg = node.pg
    if pg.running:
        pg_stop(world, spec, node)
    if src is None or not world.reachable(node.name, src.name) or not src.pg.running or src.pg.standby:
        raise Refused("source not a reachable primary")
    if src.pg.control_tli != src.pg.tli:
        raise Refused("source has not checkpointed since promotion")
    if pg.tli != src.pg.tli:
        pg.wal, pg.history = list(src.pg.wal), list(src.pg.history)
        pg.state = "in archive recovery"
    # else: real pg_rewind compares timeline numbers only: "source and target cluster are on
    # the same timeline", nothing is rewound (even when they are two forks under one number)
    pg.standby_signal, pg.follows = True, _follows(a)


def _clone(world: World, spec: LoadedSpec, node: Node, a: Action) -> None:
    src = _source(world, spec, a)
    if not node.pg.empty:
        raise Refused("target not empty")
    if src is None or not world.reachable(node.name, src.name) or not src.pg.running:
        raise Refused("source unreachable")
    node.pg.wal, node.pg.history, node.pg.empty = list(src.pg.wal), list(src.pg.history), False
    node.pg.control_tli = src.pg.tli
    node.pg.standby_signal, node.pg.follows, node.pg.running, node.pg.standby = True, _follows(a), True, True


def _drbd_primary(world: World, node: Node, res: str) -> None:
    d = node.drbd[res]
    peer = world.peer(node.name).drbd.get(res)
    if not d.configured:
        raise Refused("minor not allocated")
    if connection_state(world, node, res) == "Connected" and peer and peer.role == "Primary":
        raise Refused("(-1) Multiple primaries not allowed by config")
    if d.disk != "UpToDate":
        raise Refused("(-2) Need access to UpToDate data")
    d.role = "Primary"
    if not world.fenced_ever:
        lost = [w for w in world.acked_files.get(res, []) if w not in d.data]
        if lost:
            world.violations.append(f"{node.name} DRBD {res} promoted without acknowledged writes {lost[:3]}")


def _drbd_secondary(node: Node, res: str, device: str) -> None:
    if device in node.mounts.values():
        raise Refused("(-12) Device is held open by someone")
    node.drbd[res].role = "Secondary"


def _mount(node: Node, a: Action) -> None:
    m = a.payload
    res, dev = (m.resource, m.device) if isinstance(m, DrbdMount) else (None, None)
    d = node.drbd.get(res or "")
    if d is None or d.role != "Primary":
        raise Refused("mount: wrong medium type (DRBD device is Secondary)")
    node.mounts[a.target] = dev or ""


def _unmount(node: Node, mp: str) -> None:
    if any(node.services.values()):
        raise Refused("umount: target is busy")
    node.mounts.pop(mp, None)


def _add(node: Node, iface: str, item: Address, adopt: bool) -> None:
    i = node.ifaces.setdefault(iface, Iface())
    for x in i.addresses:
        if x.address == item.text:
            x.owned = True
            return
    if adopt:
        return
    i.addresses.append(Addr(item.text, True))


def _remove(node: Node, iface: str, item: Address) -> None:
    i = node.ifaces.get(iface)
    if i is None:
        return
    x = next((x for x in i.addresses if x.address == item.text), None)
    if x is not None and x.owned:  # never an address we do not own
        i.delete(item.text)


def steps(world: World, spec: LoadedSpec, node: Node, a: Action) -> list[Callable[[], None]]:
    k, t = a.kind, a.target
    devices = {r.name: r.device for r in spec.model.drbd}
    table: dict[Kind, list[Callable[[], None]]] = {
        Kind.STOP_SERVICE: [lambda: node.services.__setitem__(t, False)],
        Kind.START_SERVICE: [lambda: node.services.__setitem__(t, True)],
        Kind.SET_PROMOTE_SECONDARIES: [lambda: setattr(node.ifaces[t], "promote_secondaries", True)],
        Kind.REMOVE_ADDRESSES: [lambda x=x: _remove(node, t, x) for x in a.items],
        Kind.ADD_ADDRESSES: [lambda x=x: _add(node, t, x, False) for x in a.items],
        Kind.ADOPT_ADDRESSES: [lambda x=x: _add(node, t, x, True) for x in a.items],
        Kind.UNMOUNT: [lambda: _unmount(node, t)],
        Kind.MOUNT: [lambda: _mount(node, a)],
        Kind.DRBD_UP: [lambda: _drbd_up(node, t)],
        Kind.DRBD_CONNECT: [lambda: setattr(node.drbd[t], "standalone", False)],
        Kind.DRBD_SECONDARY: [lambda: _drbd_secondary(node, t, devices[t])],
        Kind.DRBD_PRIMARY: [lambda: _drbd_primary(world, node, t)],
        Kind.PG_STOP: [lambda: None, lambda: pg_stop(world, spec, node)],
        Kind.PG_CRASH_RECOVER: [lambda: _crash_recover(world, node)],
        Kind.PG_CLONE: [lambda: _clone(world, spec, node, a)],
        Kind.PG_REWIND: [lambda: _rewind(world, spec, node, a)],
        Kind.PG_START_STANDBY: [lambda: setattr(node.pg, "standby_signal", True), lambda: _start(world, node, True, a)],
        Kind.PG_RETARGET: [lambda: setattr(node.pg, "follows", _follows(a))],
        Kind.PG_START_PRIMARY: [lambda: _start(world, node, False, a)],
        Kind.PG_PROMOTE: [lambda: _promote(world, node), lambda: setattr(node.pg, "control_tli", node.pg.tli)],
        Kind.PG_CHECKPOINT: [lambda: setattr(node.pg, "control_tli", node.pg.tli)],
        Kind.AWAIT: [],
        Kind.COORD_ACQUIRE: [lambda: _etcd(world, node, "acquire", spec.digest), lambda: _claim(world, node, spec.digest)],
        Kind.COORD_RELEASE: [lambda: _release(world, spec, node)],
        Kind.COORD_PUBLISH: [lambda: _publish(world, spec, node, t)],
        Kind.COORD_WITHDRAW: [lambda: _etcd(world, node, "withdraw")],
        Kind.PG_SYNC_ON: [lambda: setattr(node.pg, "sync_names", (t,))],
        Kind.PG_SYNC_OFF: [lambda: _sync_off(world, node)],
        Kind.WATCHDOG_ARM: [lambda: _watchdog(world, node, True)],
        Kind.WATCHDOG_DISARM: [lambda: _watchdog(world, node, False)],
    }
    return table[k]


# ---- automatic failover: etcd transactions, synchronous replication, the watchdog ----------


def _etcd(world: World, node: Node, op: str, *args: str) -> None:
    assert world.etcd is not None
    if op == "acquire":
        seen = max(n.coord.remembered for n in world.nodes.values())
        if world.etcd.client_ok(world, node.name) and world.etcd.keys.epoch + 1 <= seen:
            world.violations.append(f"{node.name} acquired epoch {world.etcd.keys.epoch + 1}, but epoch {seen} "
                                    "was already seen: epochs went back")
    result = getattr(world.etcd, op)(world, node.name, *args)
    if result != "ok":
        raise Refused(result)


def _claim(world: World, node: Node, revision: str) -> None:
    assert world.etcd is not None and world.etcd.keys.acquired is not None
    owner, epoch = world.etcd.keys.acquired
    assert owner == node.name and node.coord.lease is not None
    world.etcd.record_claim(world, node.name, epoch, node.coord.lease, revision)


def _release(world: World, spec: LoadedSpec, node: Node) -> None:
    held = node.coord.held
    if held is not None and held[2] == spec.digest:
        world.violations.append(f"{node.name} released the leader key under the revision it acquired with: "
                                "a fail-back without a new revision")
    _etcd(world, node, "release")


def _publish(world: World, spec: LoadedSpec, node: Node, candidate: str) -> None:
    other = world.nodes[candidate]
    if streaming(world, spec, other) is not node or candidate not in node.pg.sync_names:
        world.violations.append(f"{node.name} published {candidate} as the candidate while it is not synchronous")
    for r, d in node.drbd.items():
        if d.role == "Primary" and connection_state(world, node, r) != "Connected":
            world.violations.append(f"{node.name} published {candidate} while DRBD {r} is disconnected")
    _etcd(world, node, "publish", candidate)


def _sync_off(world: World, node: Node) -> None:
    assert world.etcd is not None
    k = world.etcd.keys
    if k.candidate is not None and k.leader is not None and k.leader[0] == node.name and k.candidate[1] == k.leader[1]:
        world.violations.append(f"{node.name} relaxed synchronous replication while {k.candidate[0]} is the candidate")
    node.pg.sync_names = ()


def _watchdog(world: World, node: Node, arm: bool) -> None:
    node.coord.wd_armed = arm
    node.coord.wd_fed = world.local(node.name)


def _check_automatic(world: World, spec: LoadedSpec, node: Node, a: Action) -> None:
    """Promotion only by the holder of the leader key (as etcd's servers see it), and nothing
    discarded without the operator's `fenced:`."""
    if world.etcd is None:
        return
    promotes = a.kind in (Kind.PG_PROMOTE, Kind.PG_START_PRIMARY, Kind.DRBD_PRIMARY)
    if promotes and not world.etcd.holds(world, node.name):
        world.violations.append(f"{node.name} ran {a.kind.value} without holding the leader key")
    if a.kind is Kind.PG_REWIND and not world.fenced_ever:
        world.violations.append(f"{node.name} ran pg_rewind (discarding data) without the operator's fenced:")


def _drbd_up(node: Node, res: str) -> None:
    d = node.drbd.setdefault(res, Drbd())
    d.configured, d.standalone, d.role = True, False, "Secondary"


def _check_demotion_order(world: World, spec: LoadedSpec, node: Node, a: Action) -> None:
    """A demoting node stops its Primary-only services before it takes PostgreSQL or the
    floating addresses away from under them (a service's status that cannot be read is not
    a stopped service)."""
    if spec.model.primary != node.name and a.kind in (Kind.PG_STOP, Kind.REMOVE_ADDRESSES):
        live = sorted(name for name, up in node.services.items() if up)
        if live:
            world.violations.append(f"{node.name} ran {a.kind.value} while {live[0]} still runs there")


def execute(world: World, spec: LoadedSpec, node: Node, a: Action, limit: int | None = None) -> str:
    """Run the action's micro-steps (only the first `limit` if the agent dies part-way)."""
    _check_demotion_order(world, spec, node, a)
    _check_automatic(world, spec, node, a)
    todo = steps(world, spec, node, a)
    if limit is not None:
        todo = todo[:limit]
    try:
        for step in todo:
            step()
    except Refused as e:
        return f"refused: {e}"
    return "ok"


__all__ = ["execute", "pg_stop", "Refused", "is_prefix"]
