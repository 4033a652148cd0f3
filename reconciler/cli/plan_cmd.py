"""`reconciler plan`: load the spec and the observations, plan, render, exit 0/2/1.

The spec comes from FILE or from git (`--git DIR --path FILE [--rev REV]`, so a reviewer
sees what a commit would do before merging).  Offline with `--observed SNAPSHOT.json
[--peer-observed SNAPSHOT.json]`; a missing peer snapshot means "peer unreachable", exactly
as the agent sees an unanswered peer.  `-out FILE` saves the plan for `apply FILE`.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from reconciler.agent.source import stamp
from reconciler.cli import sources
from reconciler.cli.common import EXIT_CHANGES, EXIT_OK, UserError
from reconciler.cli.saved_plan import observed_fingerprint, write_saved
from reconciler.model import NodeObservation
from reconciler.plan import render
from reconciler.plan.planner import PlanError, plan
from reconciler.spec import LoadedSpec

MAX_SNAPSHOT_BYTES = 64 << 20


def load_snapshot(path: str) -> NodeObservation:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SNAPSHOT_BYTES + 1)
    except OSError as e:
        raise UserError(f"{path}: cannot read snapshot: {e.strerror}") from None
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise UserError(f"{path}: snapshot larger than {MAX_SNAPSHOT_BYTES >> 20} MiB")
    try:
        return NodeObservation.model_validate_json(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ())) or "(file)"
        raise UserError(f"{path}: {where}: {err.get('msg', 'invalid')}") from None


def cmd_plan(args: argparse.Namespace) -> int:
    # From saved snapshots nothing runs and any file may be read; live, root observes (runs the
    # services' status commands, reads secrets) only from a spec root controls.
    source = sources.from_args(args, strict=args.observed is None)
    spec = sources.load(source)
    node = sources.node_of(spec, args.node, source)
    if args.observed is None:
        from reconciler.observe.node import observe_node

        own = observe_node(spec, node)
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
    if args.out:
        write_saved(args.out, p, source, spec, own, peer)
        print(f"\nSaved the plan to {args.out}: `reconciler apply {args.out}` runs exactly these actions, "
              "and refuses if the spec or the observed state changes first.", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK if p.empty else EXIT_CHANGES


def _live_peer(spec: LoadedSpec, node: str) -> NodeObservation | None:
    from reconciler.agent.peering import fetch_peer_observation

    return fetch_peer_observation(spec, node)
