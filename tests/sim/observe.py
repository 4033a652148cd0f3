"""What a node's real drivers would report about the simulated world, as a NodeObservation."""

from __future__ import annotations

from functools import lru_cache

from reconciler.address import parse
from reconciler.model import (
    AddressObs,
    DrbdObs,
    InterfaceObs,
    MountObs,
    NodeObservation,
    PostgresObs,
    ServiceObs,
    TimelineSwitch,
    WalReceiverObs,
    int_to_lsn,
)
from reconciler.spec import LoadedSpec
from tests.sim.world import Node, World

parse = lru_cache(maxsize=4096)(parse)  # the same few addresses, parsed once (run time)


def source_node(world: World, spec: LoadedSpec, node: Node) -> Node | None:
    if node.pg.follows is None:
        return None
    host = node.pg.follows[0]
    for name, n in spec.model.nodes.items():
        if n.address == host and name != node.name:
            return world.nodes[name]
    return None


def is_prefix(a: list, b: list) -> bool:
    return len(a) <= len(b) and b[: len(a)] == a


def streaming(world: World, spec: LoadedSpec, node: Node) -> Node | None:
    """The node this standby is streaming from, if it is connected and not diverged."""
    src = source_node(world, spec, node)
    if src is None or not (node.pg.running and node.pg.standby and src.pg.running):
        return None
    if not world.reachable(node.name, src.name) or not is_prefix(node.pg.wal, src.pg.wal):
        return None
    return src


def _pg(world: World, spec: LoadedSpec, node: Node) -> PostgresObs:
    pg = node.pg
    if pg.empty:
        return PostgresObs(running=False, data_dir_empty=True)
    common = dict(
        system_identifier="7000000000000000001",
        rewind_possible=True,
        standby_signal=pg.standby_signal,
        conninfo_host=pg.follows[0] if pg.follows else None,
        conninfo_port=pg.follows[1] if pg.follows else None,
        history=tuple(TimelineSwitch(parent=p, switchpoint=int_to_lsn(s)) for p, s in pg.history),
    )
    end = int_to_lsn(len(pg.wal))
    if not pg.running:
        clean_end = int_to_lsn(pg.ckpt_lsn + 1) if pg.state == "shut down" and pg.ckpt_lsn is not None else None
        return PostgresObs(
            running=False,
            cluster_state=pg.state,
            checkpoint_lsn=int_to_lsn(pg.ckpt_lsn or 0),
            checkpoint_end_lsn=clean_end,
            checkpoint_timeline=pg.tli,
            **common,
        )
    if "settling" in node.blind:  # starting up or shutting down: no query answered
        return PostgresObs(running=True, cluster_state="in archive recovery" if pg.standby else "in production", **common)
    if not pg.standby:
        streams = tuple(sorted(o.name for o in world.nodes.values() if o is not node and streaming(world, spec, o) is node))
        return PostgresObs(running=True, in_recovery=False, timeline=pg.tli, control_timeline=pg.control_tli,
                           current_lsn=end, sync_names=pg.sync_names, streaming_standbys=streams,
                           sync_standbys=tuple(n for n in streams if n in pg.sync_names),
                           standby_flush={n: int_to_lsn(len(world.nodes[n].pg.wal)) for n in streams}, **common)
    src = source_node(world, spec, node)
    wr = None
    if src is not None and src.pg.running and world.reachable(node.name, src.name):
        status = "streaming" if streaming(world, spec, node) else "waiting"
        wr = WalReceiverObs(status=status, sender_host=pg.follows[0], sender_port=pg.follows[1], received_tli=pg.tli)
    return PostgresObs(running=True, in_recovery=True, timeline=pg.tli, control_timeline=pg.control_tli,
                       receive_lsn=end, replay_lsn=end, wal_receiver=wr, replay_paused=pg.paused, **common)


def _drbd(world: World, node: Node, res: str) -> DrbdObs:
    d = node.drbd.get(res)
    if d is None or not d.configured:
        return DrbdObs(configured=False)
    peer = world.peer(node.name)
    pd = peer.drbd.get(res)
    conn = connection_state(world, node, res)
    disk, peer_disk = d.disk, pd.disk if pd else "DUnknown"
    if conn == "Connected" and pd is not None and d.data != pd.data:
        # Reconnected, data not yet resynchronised (the next `replicate` does it at once): real DRBD
        # never shows Connected/UpToDate here: the node behind is SyncTarget and Inconsistent, and
        # diverged data is still in the handshake that ends StandAlone (split brain).
        if is_prefix(d.data, pd.data) and d.role != "Primary":
            conn, disk = "SyncTarget", "Inconsistent"
        elif is_prefix(pd.data, d.data) and pd.role != "Primary":
            conn, peer_disk = "SyncSource", "Inconsistent"
        else:
            conn = "WFReportParams"
    connected = conn in ("Connected", "SyncSource", "SyncTarget")
    return DrbdObs(
        configured=True,
        role=d.role,
        peer_role=pd.role if connected and pd else "Unknown",
        connection=conn,
        disk=disk,
        peer_disk=peer_disk if connected and pd else "DUnknown",
        open=any(dev for dev in node.mounts.values()),
        split_brain=d.split_brain,
    )


def connection_state(world: World, node: Node, res: str) -> str:
    d = node.drbd[res]
    if d.standalone:
        return "StandAlone"
    pd = world.peer(node.name).drbd.get(res)
    if pd and pd.configured and not pd.standalone and world.reachable(node.name, world.peer(node.name).name):
        return "Connected"
    return "WFConnection"


def observe(world: World, spec: LoadedSpec, node: Node) -> NodeObservation:
    ifaces = {}
    for name in spec.addresses:
        i = node.ifaces.get(name)
        if i is None:
            ifaces[name] = InterfaceObs(exists=False)
            continue
        addrs = tuple(AddressObs(address=parse(a.address), owned=a.owned, secondary=i.is_secondary(a)) for a in i.addresses)
        ifaces[name] = InterfaceObs(promote_secondaries=i.promote_secondaries, addresses=addrs)
    mounts = {mp: MountObs(source=dev, fstype="ext4") for mp, dev in node.mounts.items()}
    drbd = {r.name: _drbd(world, node, r.name) for r in spec.model.drbd}
    pg = _pg(world, spec, node) if spec.model.postgres else None
    services = {s.name: ServiceObs(active=node.services.get(s.name, False)) for s in spec.model.services}
    blind = sorted(node.blind - {"settling"})
    # what observe.node does when a driver fails: that part empty, the failure in errors
    ifaces = {} if "net" in blind else ifaces
    drbd = {} if "drbd" in blind else drbd
    pg = None if "postgres" in blind else pg
    services = {} if "services" in blind else services
    coord = None
    if spec.model.failover.mode == "automatic" and world.etcd is not None:
        coord = world.etcd.observe(world, node.name, spec.model.failover)
    return NodeObservation(node=node.name, interfaces=ifaces, drbd=drbd, mounts=mounts, postgres=pg,
                           services=services, coord=coord, errors=tuple(NodeObservation.failure(b, "simulated driver failure") for b in blind))
