"""`reconciler status`: what this node and its peer look like, which spec revision each
applies, and whether the two agree on the roles (the planner's revision-agreement guard
holds a role change back while they do not; two copies of a spec that differ elsewhere,
in per-node paths say, are fine)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from reconciler.agent.peering import PeerLink
from reconciler.agent.source import SourceError, SpecSource, stamp
from reconciler.agent.state import DEFAULT_STATE_DIR, Revisions, read_state, revision_label, short, state_path
from reconciler.cli import sources
from reconciler.cli.common import EXIT_OK
from reconciler.cli.leadership_status import leadership_lines
from reconciler.cli.plan_cmd import with_coord
from reconciler.model import NodeObservation, PostgresObs, lsn_to_int
from reconciler.observe.node import observe_node
from reconciler.plan.agreement import spec_roles
from reconciler.spec import LoadedSpec

FILE_DEFAULT = "/etc/reconciler/cluster.yaml"


def cmd_status(args: argparse.Namespace) -> int:
    source = sources.from_args(args, file_default=FILE_DEFAULT)
    spec = sources.load(source)
    node = sources.node_of(spec, args.node, source)
    own = stamp(with_coord(spec, node, observe_node(spec, node), args.state_dir), spec)
    if args.json:
        sys.stdout.write(own.to_json() + "\n")
        return EXIT_OK
    peer = PeerLink(spec, node).fetch()
    state_file = state_path(args.state_dir or DEFAULT_STATE_DIR, node)
    revs = read_state(args.state_dir or DEFAULT_STATE_DIR, node)
    sys.stdout.write(status_text(spec, own, peer))
    sys.stdout.write("\n".join(revision_lines(source, spec, revs, peer, state_file)) + "\n")
    if spec.model.failover.witness is not None or spec.model.failover.mode != "manual":
        from reconciler.cli.coord_status import coordination_lines

        sys.stdout.write("\n".join(coordination_lines(spec.model)) + "\n")
    return EXIT_OK


def _when(t: float | None) -> str:
    return time.strftime(" at %Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def _uncommitted(source: SpecSource) -> bool:
    try:
        return source.uncommitted()
    except SourceError:
        return False


def revision_lines(source: SpecSource, spec: LoadedSpec, revs: Revisions | None, peer: NodeObservation | None,
                   state_file: str) -> list[str]:
    """Flux-style: last applied and last attempted revision; which revision each node applies,
    and whether both apply the same roles (what the revision-agreement guard compares)."""
    read_now = revision_label(spec.revision, spec.digest)
    out = [f"Spec      {source.describe()}: {short(read_now)}"]
    if _uncommitted(source):
        out.append(f"          uncommitted edits to {source.path} are ignored until committed")
    out += _recorded(revs, state_file)
    if peer is None or peer.spec_digest is None:
        return out
    here = revs.current if revs is not None and revs.current else read_now
    theirs = revision_label(peer.revision, peer.spec_digest)
    mine, their_roles = spec_roles(spec.model), peer.spec_roles
    if theirs == here:
        out.append(f"Peer {peer.node}  applies the same revision as this node, {short(here)}")
    else:
        now = f" (the spec read now is {short(read_now)})" if here != read_now else ""
        out.append(f"Peer {peer.node}  applies {short(theirs)}; this node applies {short(here)}{now}")
    if their_roles is None:
        out.append(f"Roles     unknown: peer {peer.node} does not report the roles it applies")
    elif their_roles == mine:
        elsewhere = "; the two specs differ only outside the roles" if theirs != here else ""
        out.append(f"Roles     the same on both nodes: {mine}{elsewhere}")
    else:
        out.append(f"Roles     DIFFERENT: this node applies {mine}, peer {peer.node} applies {their_roles}; "
                   "a role change waits until both apply the same roles")
    return out


def _recorded(revs: Revisions | None, state_file: str) -> list[str]:
    """The agent's record of its revisions, or why there is none."""
    if revs is None:
        if os.path.exists(state_file):
            return [f"Revision  not recorded: {state_file} cannot be read as an agent's state file"]
        return [f"Revision  not recorded: no agent has written {state_file} (an agent records its revisions "
                "only when run with --git or --state-dir DIR; give status the same --state-dir)"]
    out = [f"Revision  applied {short(revs.applied)}{_when(revs.applied_at)}; "
           f"attempted {short(revs.attempted)}{_when(revs.attempted_at)}"]
    if revs.attempted_error:
        out.append(f"          attempted revision refused: {revs.attempted_error}")
    return out


def _pg_line(pg: PostgresObs | None, peer_pg: PostgresObs | None) -> str:
    if pg is None:
        return "not observed"
    if not pg.running:
        return f"stopped ({pg.cluster_state or 'no data'})"
    if not pg.in_recovery:
        lag = ""
        if peer_pg is not None and peer_pg.running and peer_pg.in_recovery and pg.current_lsn and peer_pg.receive_lsn:
            lag = f", standby lag {max(0, lsn_to_int(pg.current_lsn) - lsn_to_int(peer_pg.receive_lsn)):,} bytes"
        return f"primary, timeline {pg.timeline}, at {pg.current_lsn}{lag}"
    wr = pg.wal_receiver
    src = f"{wr.status} from {wr.sender_host}:{wr.sender_port}" if wr else "no walreceiver"
    return f"standby, timeline {pg.timeline}, received {pg.receive_lsn}, replayed {pg.replay_lsn}, {src}"


def status_text(spec: LoadedSpec, own: NodeObservation, peer: NodeObservation | None) -> str:
    s = spec.model
    prim = (f"preferred primary {s.primary} (failover automatic)" if s.failover.mode == "automatic"
            else f"spec primary {s.primary}")
    out = [f"{own.node}: cluster {s.cluster}, {prim}, spec {spec.digest[:12]}"]
    if s.drbd:
        out.append("DRBD  resource  connection     roles               disks                  mount")
    for r in s.drbd:
        d = own.drbd.get(r.name)
        m = own.mounts.get(r.mount) if r.mount else None
        if d is None or not d.configured:
            out.append(f"      {r.name:<9} down")
            continue
        mount = f"{r.mount} ({m.fstype})" if m else "-"
        sb = "  SPLIT BRAIN" if d.split_brain else ""
        out.append(f"      {r.name:<9} {d.connection:<14} {d.role + '/' + d.peer_role:<19} {d.disk + '/' + d.peer_disk:<22} {mount}{sb}")
    if s.postgres is not None:
        out.append(f"PostgreSQL  {_pg_line(own.postgres, peer.postgres if peer else None)}")
    for name, want in spec.addresses.items():
        i = own.interfaces.get(name)
        owned = {a.address for a in i.addresses if a.owned} if i else set()
        foreign = len(i.addresses) - len(owned) if i else 0
        out.append(f"Floating IPs  {name}: {len(owned & set(want))}/{len(want)} held here, {foreign} other addresses")
    for svc in s.services:
        st = own.services.get(svc.name)
        out.append(f"Service  {svc.name}: {'active' if st and st.active else 'inactive'}")
    p = s.peer_of(own.node)
    if p:
        out.append(f"Peer {p}: " + ("reachable" if peer else "unreachable"))
    out += leadership_lines(spec, own, peer)
    out += [f"! {e}" for e in own.errors]
    return "\n".join(out) + "\n"
