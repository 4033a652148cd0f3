"""One reconcile cycle: observe this node and the peer, plan, run the first action.

Level-triggered: nothing is carried between cycles; every cycle starts from a fresh
observation.  The outcome tells the caller what to do next: act again at once
(`acted`), poll (`waiting` on a guard), back off (`failed`), or rest (`converged`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.execute.dispatch import Result, run_action
from reconciler.model import NodeObservation
from reconciler.plan.actions import Action, Plan
from reconciler.plan.planner import plan
from reconciler.spec import LoadedSpec

Observe = Callable[[LoadedSpec, str], NodeObservation]
FetchPeer = Callable[[], NodeObservation | None]


@dataclass(frozen=True)
class Outcome:
    status: str  # converged | waiting | acted | failed
    plan: Plan
    own: NodeObservation
    action: Action | None = None
    result: Result | None = None
    seconds: float = 0.0


def cycle(spec: LoadedSpec, node: str, observe: Observe, fetch_peer: FetchPeer,
          execute: Callable[[LoadedSpec, Action], Result] = run_action) -> Outcome:
    own = observe(spec, node)
    peer = fetch_peer()
    p = plan(spec, node, own, peer)
    a = p.next_action
    if a is None:
        return Outcome("converged", p, own)
    if a.blocked:
        return Outcome("waiting", p, own, a)
    t0 = time.monotonic()
    r = execute(spec, a)
    return Outcome("acted" if r.ok else "failed", p, own, a, r, time.monotonic() - t0)
