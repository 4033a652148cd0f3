"""`reconciler plan`: load the spec and the observations, plan, render, exit 0/2/1.

The spec comes from FILE or from git (`--git DIR --path FILE [--rev REV]`, so a reviewer
sees what a commit would do before merging).  Offline with `--observed SNAPSHOT.json
[--peer-observed SNAPSHOT.json]`; a missing peer snapshot means "peer unreachable", exactly
as the agent sees an unanswered peer.  `-out FILE` saves the plan for `apply FILE`.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys

from reconciler.agent.source import stamp
from reconciler.cli import sources
from reconciler.cli.common import EXIT_CHANGES, EXIT_OK, UserError
from reconciler.cli.saved_plan import observed_fingerprint, write_saved
from reconciler.model import MAX_SNAPSHOT_BYTES, NodeObservation, SnapshotError, parse_snapshot
from reconciler.plan import render
from reconciler.plan.planner import PlanError, plan
from reconciler.spec import LoadedSpec


def load_snapshot(path: str) -> NodeObservation:
    """The snapshot in the regular file `path` (`parse_snapshot` checks it).  O_NONBLOCK so that
    a FIFO given by mistake is refused instead of blocking; at most MAX_SNAPSHOT_BYTES + 1 read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UserError(f"{path}:1:1: (file): not a regular file")
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_SNAPSHOT_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as e:
        raise UserError(f"{path}:1:1: (file): cannot read the snapshot: {e.strerror or type(e).__name__}") from None
    try:
        return parse_snapshot(data, path)
    except SnapshotError as e:
        raise UserError(str(e)) from None


def cmd_plan(args: argparse.Namespace) -> int:
    # From saved snapshots nothing runs and any file may be read; live, root observes (runs the
    # services' status commands, reads secrets) only from a spec root controls.
    source = sources.from_args(args, strict=args.observed is None)
    spec = sources.load(source)
    node = sources.node_of(spec, args.node, source)
    if args.out and spec.model.failover.mode == "automatic":
        raise UserError("-out: failover.mode is automatic: only the agent applies, holding the etcd lease; "
                        "a saved plan would be applied without it")
    if args.observed is None:
        from reconciler.observe.node import observe_node

        own = with_coord(spec, node, observe_node(spec, node), getattr(args, "state_dir", None))
        peer = _live_peer(spec, node) if args.peer_observed is None else load_snapshot(args.peer_observed)
    else:
        own = load_snapshot(args.observed)
        peer = load_snapshot(args.peer_observed) if args.peer_observed else None
    own = stamp(own, spec)
    try:
        p = plan(spec, node, own, peer)
    except PlanError as e:
        raise UserError(str(e)) from None
    s = spec.model
    if args.json:
        sys.stdout.write(render.to_json(p, s.cluster, s.primary, spec.digest, observed_fingerprint(own, peer)))
    else:
        if spec.revision:
            sys.stdout.write(f"Spec: {source.describe()} = commit {spec.revision[:12]}\n")
        sys.stdout.write(render.human(p, s.cluster, s.primary, verbose=args.verbose))
        sys.stdout.write(if_lease_lost(spec, node, own, peer))
    if args.out:
        write_saved(args.out, p, source, spec, own, peer)
        print(f"\nSaved the plan to {args.out}: `reconciler apply {args.out}` runs exactly these actions, "
              "and refuses if the spec or the observed state changes first.", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK if p.empty else EXIT_CHANGES


def if_lease_lost(spec: LoadedSpec, node: str, own: NodeObservation, peer: NodeObservation | None) -> str:
    """Automatic failover, on the holder: the plan it would follow if its lease stopped being renewed
    (the same planner, with no renewal for demote_after_s): its self-demotion, in order."""
    c = own.coord
    if spec.model.failover.mode != "automatic" or c is None or c.held_lease is None or c.held_epoch is None:
        return ""
    lost = own.model_copy(update={"coord": c.model_copy(update={"since_renewal_s": spec.model.failover.demote_after_s})})
    p = plan(spec, node, lost, peer)
    steps = [f"  {a.symbol} {render.title(a)}" for a in p.actions] or ["  (nothing: it serves nothing now)"]
    return ("\nIf this node lost its lease (no renewal for demote_after_s = "
            f"{spec.model.failover.demote_after_s:g} s), it would demote itself, waiting for nobody:\n"
            + "\n".join(steps) + "\n")


def with_coord(spec: LoadedSpec, node: str, own: NodeObservation, state_dir: str | None) -> NodeObservation:
    """Automatic failover: the leadership as the agent sees it (etcd, its keeper, its claim)."""
    if spec.model.failover.mode != "automatic":
        return own
    from reconciler.agent.coordination import read_only
    from reconciler.agent.state import DEFAULT_STATE_DIR

    return own.model_copy(update={"coord": read_only(spec, node, state_dir or DEFAULT_STATE_DIR)})


def _live_peer(spec: LoadedSpec, node: str) -> NodeObservation | None:
    from reconciler.agent.peering import fetch_peer_observation

    return fetch_peer_observation(spec, node)
