"""`apply` (one pass, or a saved plan) and `run` (the agent); `status` is in `status_cmd`."""

from __future__ import annotations

import argparse
import sys

from reconciler import trust
from reconciler.agent import logs
from reconciler.agent.loop import Acted, Converged, Loop, OperatorNeeded, Outcome, Retrying, Waiting
from reconciler.agent.peering import PeerLink
from reconciler.agent.source import FileSource, GitSource
from reconciler.agent.state import DEFAULT_STATE_DIR
from reconciler.cli import sources
from reconciler.cli.common import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, UserError, default_node
from reconciler.model import NodeObservation
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
        try:  # it names the spec to read and the actions to run: root's only
            trust.check_file(args.file, "saved plan")
        except trust.UntrustedError as e:
            raise UserError(str(e)) from None
        return apply_saved(args, saved)
    source = FileSource(args.file)
    spec = sources.load(source)
    node = sources.node_of(spec, args.node, source)
    if spec.model.failover.mode == "automatic":
        raise UserError(f"{args.file}: failover.mode is automatic: the agent (`reconciler run`) applies it, "
                        "holding the etcd lease; a one-shot apply would act without it (see `reconciler plan`)")
    logs.setup(args.log_format)
    link = PeerLink(spec, node)

    def observe(sp: LoadedSpec, n: str) -> NodeObservation:
        return observe_node(sp, n, spec_digest=sp.digest)

    first = plan(spec, node, observe(spec, node), link.fetch())
    sys.stdout.write(render.human(first, spec.model.cluster, spec.model.primary))
    if first.empty:
        return EXIT_OK
    if not args.yes and not _confirm():
        print("Apply cancelled.")
        return EXIT_CHANGES
    loop = Loop(node, observe, link.fetch)
    for _ in range(MAX_APPLY_STEPS):
        o = loop.step(spec)
        if isinstance(o, Converged):
            wait_for_announcements()
            print("Apply complete: this node matches the desired state.")
            return EXIT_OK
        rc = stop_code(node, o)
        if rc is not None:
            return rc
    raise UserError(f"no convergence after {MAX_APPLY_STEPS} actions")


def stop_code(node: str, o: Outcome) -> int | None:
    """What `apply` (one pass, or a saved plan) says of a step that did not converge: the
    exit code to stop with, or None to go on after an action that ran."""
    match o:
        case Acted():
            logs.action_line(node, o)
        case Retrying(action=a, reason=why):
            logs.action_line(node, o)
            print(f"Failed: {render.title(a)}: {why}")
            return EXIT_ERROR
        case Waiting(action=a, reason=why):
            print(f"Stopped: {render.title(a)}: waiting: {why}")
            return EXIT_CHANGES
        case OperatorNeeded(action=a, reason=why, guards=guards):
            print(f"Stopped: {render.title(a)}: waiting: {why}" if guards else f"Stopped: {why}")
            return EXIT_CHANGES
    return None


def cmd_run(args: argparse.Namespace) -> int:
    from reconciler.agent.run import Agent

    logs.setup(args.log_format)
    source = sources.from_args(args)
    state_dir = args.state_dir or (DEFAULT_STATE_DIR if isinstance(source, GitSource) else None)
    with sources.spec_errors(source):
        agent = Agent(source, args.node or default_node(), state_dir=state_dir)
    return agent.run()


def cmd_fence_peer(args: argparse.Namespace) -> int:
    """Exit 4 (DRBD: the peer is outdated) only when this node holds the leader key and withdrew the
    candidate under its lease; 1 otherwise (IO stays frozen).  One line on stderr either way."""
    from reconciler.agent.coordination import FENCE_REFUSED, fence_peer

    source = sources.from_args(args)
    try:
        spec = sources.load(source)
        code, line = fence_peer(spec, sources.node_of(spec, args.node, source), args.state_dir or DEFAULT_STATE_DIR)
    except UserError as e:
        code, line = FENCE_REFUSED, f"fence-peer: {e}"
    print(line, file=sys.stderr)
    return code
