"""`apply` (one pass, or a saved plan), `run` (the agent) and `status` (what this node and
its peer look like, and which spec revision each applies)."""

from __future__ import annotations

import argparse
import sys
import time

from reconciler.agent import logs
from reconciler.agent.cycle import cycle
from reconciler.agent.peering import PeerLink
from reconciler.agent.source import FileSource, GitSource, SourceError, SpecSource, stamp
from reconciler.agent.state import DEFAULT_STATE_DIR, Revisions, read_state, revision_label, short
from reconciler.cli import sources
from reconciler.cli.common import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, UserError, default_node
from reconciler.model import NodeObservation, lsn_to_int
from reconciler.observe.node import observe_node
from reconciler.plan import render
from reconciler.plan.planner import plan
from reconciler.spec import LoadedSpec

MAX_APPLY_STEPS = 500


def _confirm() -> bool:
    if not sys.stdin.isatty():
        return True
    answer = input("Apply these actions? Only 'yes' is accepted: ")
    return answer.strip() == "yes"


def cmd_apply(args: argparse.Namespace) -> int:
    from reconciler.cli.saved_plan import apply_saved, read_saved
    from reconciler.execute.dispatch import wait_for_announcements

    saved = read_saved(args.file)
    if saved is not None:
        return apply_saved(args, saved)
    source = FileSource(args.file)
    spec = sources.load(source)
    node = sources.node_of(spec, args.node, source)
    logs.setup(args.log_format)
    link = PeerLink(spec, node)
    observe = lambda sp, n: observe_node(sp, n, spec_digest=sp.digest)  # noqa: E731
    first = plan(spec, node, observe(spec, node), link.fetch())
    sys.stdout.write(render.human(first, spec.model.cluster, spec.model.primary))
    if first.empty:
        return EXIT_OK
    if not args.yes and not _confirm():
        print("Apply cancelled.")
        return EXIT_CHANGES
    for _ in range(MAX_APPLY_STEPS):
        o = cycle(spec, node, observe, link.fetch)
        if o.status == "converged":
            wait_for_announcements()
            print("Apply complete: this node matches the desired state.")
            return EXIT_OK
        if o.status == "waiting":
            print(f"Stopped: {render.title(o.action)}: waiting: {'; '.join(o.action.waiting_on)}")
            return EXIT_CHANGES
        logs.action_line(node, o)
        if o.status == "failed":
            print(f"Failed: {render.title(o.action)}: {o.result.detail}")
            return EXIT_ERROR
    raise UserError(f"no convergence after {MAX_APPLY_STEPS} actions")


def cmd_run(args: argparse.Namespace) -> int:
    from reconciler.agent.run import Agent

    logs.setup(args.log_format)
    source = sources.from_args(args)
    state_dir = args.state_dir or (DEFAULT_STATE_DIR if isinstance(source, GitSource) else None)
    with sources.spec_errors(source):
        agent = Agent(source, args.node or default_node(), state_dir=state_dir)
    return agent.run()


def cmd_status(args: argparse.Namespace) -> int:
    source = sources.from_args(args, file_default="/etc/reconciler/cluster.yaml")
    spec = sources.load(source)
    node = sources.node_of(spec, args.node, source)
    own = stamp(observe_node(spec, node), spec)
    if args.json:
        sys.stdout.write(own.to_json() + "\n")
        return EXIT_OK
    peer = PeerLink(spec, node).fetch()
    revs = read_state(args.state_dir or DEFAULT_STATE_DIR, node)
    sys.stdout.write(status_text(spec, own, peer))
    sys.stdout.write("\n".join(revision_lines(source, spec, revs, peer)) + "\n")
    return EXIT_OK


def _when(t: float | None) -> str:
    return time.strftime(" at %Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def _uncommitted(source: SpecSource) -> bool:
    try:
        return source.uncommitted()
    except SourceError:
        return False


def revision_lines(source: SpecSource, spec: LoadedSpec, revs: Revisions | None, peer: NodeObservation | None) -> list[str]:
    """Flux-style: last applied and last attempted revision; whether the peer applies the same."""
    here = revision_label(spec.revision, spec.digest)
    out = [f"Spec      {source.describe()}: {short(here)}"]
    if _uncommitted(source):
        out.append(f"          uncommitted edits to {source.path} are ignored until committed")
    if revs is None:
        out.append("Revision  no agent state recorded (see --state-dir)")
    else:
        out.append(f"Revision  applied {short(revs.applied)}{_when(revs.applied_at)}; "
                   f"attempted {short(revs.attempted)}{_when(revs.attempted_at)}")
        if revs.attempted_error:
            out.append(f"          attempted revision refused: {revs.attempted_error}")
        here = revs.current or here
    if peer is not None and peer.spec_digest is not None:
        theirs = revision_label(peer.revision, peer.spec_digest)
        verdict = "same revision as this node" if theirs == here else f"DIFFERENT revision from this node ({short(here)})"
        out.append(f"Peer {peer.node}  applies {short(theirs)} ({peer.spec_roles or 'roles unknown'}): {verdict}")
    return out


def _pg_line(pg, peer_pg) -> str:
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
    out = [f"{own.node}: cluster {s.cluster}, spec primary {s.primary}, spec {spec.digest[:12]}"]
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
    out += [f"! {e}" for e in own.errors]
    return "\n".join(out) + "\n"
