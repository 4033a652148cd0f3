"""Saved plans: `plan -out FILE` writes one, `apply FILE` runs exactly it or refuses.

The file holds the plan (the `plan --json` document), where the spec came from, its
digest and `observed_fingerprint` of both observations (the one `plan --json` shows).  `apply` reads the spec again from the
same source, observes again and refuses with "Saved plan is stale" when either changed;
otherwise it runs the saved actions in order through the shared loop (`agent.loop`),
observing and re-planning before each, and stops at the first one that is blocked, failed,
did not take effect, or is no longer the next action.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from typing import Any

from reconciler import safefile
from reconciler.agent import logs
from reconciler.agent.loop import Admit, Converged, Loop
from reconciler.agent.peering import PeerLink
from reconciler.agent.source import SpecSource, stamp
from reconciler.cli import sources
from reconciler.cli.common import EXIT_ERROR, EXIT_OK, UserError
from reconciler.model import NodeObservation
from reconciler.plan import render
from reconciler.plan.actions import Action, Plan
from reconciler.plan.planner import plan
from reconciler.spec import LoadedSpec

KIND = "reconciler-saved-plan"
SAVED_FORMAT = 1
MAX_SAVED_BYTES = 64 << 20
# WAL positions of a running server move with every write: left out of the fingerprint,
# or a saved plan of a busy primary would always be stale.  The guards that read them are
# evaluated again before each action anyway.
_VOLATILE_PG = ("current_lsn", "receive_lsn", "replay_lsn")
_OWN_STAMPS = ("spec_digest", "revision", "spec_roles")  # what we applied, not what we observed


def _normal(obs: NodeObservation, own: bool) -> dict[str, Any]:
    d = obs.model_dump(mode="json")
    pg = d.get("postgres")
    if pg and pg.get("running"):
        for k in _VOLATILE_PG:
            pg.pop(k, None)
    for k in _OWN_STAMPS if own else ():
        d.pop(k, None)
    return d


def observed_fingerprint(own: NodeObservation, peer: NodeObservation | None) -> str:
    """The one hash of what this node and its peer look like, written as `observed_fingerprint`
    by `plan --json` and `plan -out`; `apply PLAN` refuses when it is no longer the same."""
    doc = [_normal(own, True), _normal(peer, False) if peer is not None else "unreachable"]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def action_key(a: Action | dict[str, Any]) -> list[Any]:
    if isinstance(a, Action):
        return [a.kind.value, a.target, [x.text for x in a.items], sorted([k, v] for k, v in a.payload_text.items())]
    return [a["kind"], a["target"], list(a["items"]), sorted([k, v] for k, v in a["params"].items())]


def write_saved(path: str, p: Plan, source: SpecSource, spec: LoadedSpec, own: NodeObservation,
                peer: NodeObservation | None) -> None:
    s = spec.model
    fp = observed_fingerprint(own, peer)
    doc = {"kind": KIND, "saved_format": SAVED_FORMAT, "node": p.node, "source": sources.to_doc(source, spec),
           "spec_digest": spec.digest, "revision": spec.revision, "observed_fingerprint": fp,
           "plan": json.loads(render.to_json(p, s.cluster, s.primary, spec.digest, fp))}
    try:  # a fresh random temporary name, O_EXCL|O_NOFOLLOW: nothing planted there is followed
        safefile.write_file(path, (json.dumps(doc, indent=2) + "\n").encode(), 0o600)
    except OSError as e:
        raise UserError(f"{path}: cannot write the saved plan: {e.strerror or e}") from None


def read_saved(path: str) -> dict[str, Any] | None:
    """The saved plan in `path`, or None when the file is not one (then it is a spec)."""
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_SAVED_BYTES + 1)
    except OSError:
        return None
    if not head.lstrip().startswith(b"{") or len(head) > MAX_SAVED_BYTES:
        return None
    try:
        doc = json.loads(head)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        return None
    if doc.get("saved_format") != SAVED_FORMAT:
        raise UserError(f"{path}: saved_format is not {SAVED_FORMAT}, the one format this reconciler reads")
    missing = [k for k in ("node", "source", "spec_digest", "observed_fingerprint", "plan") if k not in doc]
    if missing or not isinstance(doc["plan"], dict) or not isinstance(doc["plan"].get("changes"), list):
        raise UserError(f"{path}: not a complete saved plan (missing {', '.join(missing) or 'plan.changes'})")
    return doc


def _observe(loaded: LoadedSpec, node: str) -> NodeObservation:
    from reconciler.observe.node import observe_node

    return stamp(observe_node(loaded, node), loaded)


def _stale(why: str) -> UserError:
    return UserError(f"Saved plan is stale: {why}. Make a new one with `reconciler plan -out FILE`.")


def _load_fresh(doc: dict[str, Any]) -> tuple[SpecSource, LoadedSpec]:
    """The spec the plan names (checked: root's), refused when it changed since the plan was made."""
    source = sources.from_doc(doc["source"])
    loaded = sources.load(source)
    if loaded.digest != doc["spec_digest"]:
        now = f" (now commit {loaded.revision[:12]})" if loaded.revision else ""
        raise _stale(f"the spec changed since the plan was made{now}")
    return source, loaded


def _announce(path: str, doc: dict[str, Any], source: SpecSource, loaded: LoadedSpec) -> None:
    """What `apply PLAN` is about to run, and from which spec, before it observes or acts."""
    rev = f"commit {loaded.revision[:12]}" if loaded.revision else f"digest {loaded.digest[:12]}"
    changes = doc["plan"]["changes"]
    print(f"Saved plan {path}: {len(changes)} action(s) on node {doc['node']}, "
          f"from the spec {source.describe()} ({rev}):")
    for c in changes:
        print(f"  {c.get('title') or c.get('kind')}")


def _check_fresh(doc: dict[str, Any], node: str, loaded: LoadedSpec) -> tuple[PeerLink, tuple[NodeObservation, NodeObservation | None]]:
    link = PeerLink(loaded, node)
    own, peer = _observe(loaded, node), link.fetch()
    if observed_fingerprint(own, peer) != doc["observed_fingerprint"]:
        raise _stale("the observed state of this node or its peer changed since the plan was made")
    p = plan(loaded, node, own, peer)
    if [action_key(a) for a in p.actions] != [action_key(c) for c in doc["plan"]["changes"]]:
        raise _stale("planning again now gives different actions")
    return link, (own, peer)


def _as_saved(change: dict[str, Any]) -> Admit:
    """Admits the next action only while it is still the saved `change`."""
    def admit(a: Action) -> str | None:
        if action_key(a) == action_key(change):
            return None
        return f"the next action is now {render.title(a)}, not {change['title']} as saved; plan again."
    return admit


def apply_saved(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    """The shared loop, admitting only the saved actions in order; the first step acts on
    the observation the staleness check made, and the last action's effect is confirmed."""
    from reconciler.cli.agent_cmds import stop_code
    from reconciler.execute.dispatch import wait_for_announcements

    node = str(doc.get("node"))
    if args.node and args.node != node:
        raise UserError(f"{args.file}: the plan is for node {node}, not {args.node}")
    logs.setup(args.log_format)
    source, loaded = _load_fresh(doc)
    _announce(args.file, doc, source, loaded)
    link, seen = _check_fresh(doc, node, loaded)
    loop = Loop(node, lambda _spec, n: _observe(loaded, n), link.fetch)
    saved = doc["plan"]["changes"]
    done = 0
    for change in saved:
        o = loop.step(loaded, _as_saved(change), seen if done == 0 else None)
        if isinstance(o, Converged):
            break
        rc = stop_code(node, o)
        if rc is not None:
            return rc
        done += 1
    missed = loop.confirm(loaded)
    if missed is not None:
        return stop_code(node, missed) or EXIT_ERROR
    wait_for_announcements()
    print(f"Apply complete: {done} of the saved plan's {len(saved)} action(s) ran"
          + ("." if done == len(saved) else "; the rest were no longer needed."))
    return EXIT_OK
