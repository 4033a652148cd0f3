"""The one reconcile loop: `reconciler run`, `apply` and `apply PLAN` all step through it.

One step observes this node and the peer, plans, and runs at most the first action.
Level-triggered: every step starts from a fresh observation; what is carried from one
step to the next is only the action just run (whose effect the next observation must
show, see `plan.postcondition`) and how often each action failed in a row.

The outcome of a step is typed, and says what the caller does next:
  Converged       nothing to do: rest until the spec changes or the drift check is due
  Acted           one action ran: step again at once
  Waiting         the next action waits on a guard that lifts by itself: poll
  OperatorNeeded  it waits on something only an operator does (see `plan.operator`),
                  or the caller refused it: report once, re-check at the drift interval
  Retrying        the action failed, or its effect did not show: back off, then retry
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.execute.dispatch import Result, run_action
from reconciler.model import NodeObservation
from reconciler.plan import operator, postcondition
from reconciler.plan.actions import Action, Guard, Plan
from reconciler.plan.planner import plan
from reconciler.spec import LoadedSpec

Observe = Callable[[LoadedSpec, str], NodeObservation]
FetchPeer = Callable[[], NodeObservation | None]
Execute = Callable[[LoadedSpec, Action], Result]
# Asked before an action runs: None to run it, else why not (`apply PLAN` runs only its saved actions)
Admit = Callable[[Action], str | None]


@dataclass(frozen=True, kw_only=True)
class Outcome:
    plan: Plan
    own: NodeObservation


@dataclass(frozen=True, kw_only=True)
class Converged(Outcome):
    pass


@dataclass(frozen=True, kw_only=True)
class Acted(Outcome):
    action: Action
    result: Result
    seconds: float


@dataclass(frozen=True, kw_only=True)
class Waiting(Outcome):
    action: Action

    @property
    def guards(self) -> tuple[Guard, ...]:
        return operator.unmet(self.action)

    @property
    def reason(self) -> str:
        return "; ".join(self.action.waiting_on)


@dataclass(frozen=True, kw_only=True)
class OperatorNeeded(Outcome):
    action: Action
    reason: str
    guards: tuple[Guard, ...] = ()  # the operator-only guards it waits on; () when the caller refused it


@dataclass(frozen=True, kw_only=True)
class Retrying(Outcome):
    action: Action
    reason: str
    attempt: int  # how many times in a row this action failed or did not take effect
    result: Result | None = None  # the failed run; None: it ran, but its effect did not show
    seconds: float = 0.0

    @property
    def not_in_effect(self) -> bool:
        return self.result is None


def _key(a: Action) -> tuple[str, str]:
    return a.kind.value, a.target


class Loop:
    def __init__(self, node: str, observe: Observe, fetch_peer: FetchPeer, execute: Execute = run_action) -> None:
        self.node, self.observe, self.fetch_peer, self.execute = node, observe, fetch_peer, execute
        self.pending: tuple[str, Action] | None = None  # (spec digest, action) run, its effect not yet seen
        self.failures: dict[tuple[str, str], int] = {}

    def step(self, spec: LoadedSpec, admit: Admit | None = None,
             seen: tuple[NodeObservation, NodeObservation | None] | None = None) -> Outcome:
        """Observe (or take `seen`, an observation the caller just made), plan, act once."""
        own, peer = seen if seen is not None else (self.observe(spec, self.node), self.fetch_peer())
        p = plan(spec, self.node, own, peer)
        missed = self._check(spec, own, p)
        if missed is not None:
            return missed
        a = p.next_action
        if a is None:
            return Converged(plan=p, own=own)
        refused = admit(a) if admit is not None else None
        if refused is not None:
            return OperatorNeeded(plan=p, own=own, action=a, reason=refused)
        if a.blocked:
            if operator.operator_only(a):
                return OperatorNeeded(plan=p, own=own, action=a, reason="; ".join(a.waiting_on),
                                      guards=operator.unmet(a))
            return Waiting(plan=p, own=own, action=a)
        t0 = time.monotonic()
        r = self.execute(spec, a)
        seconds = time.monotonic() - t0
        if r.ok:
            self.pending = (spec.digest, a)
            return Acted(plan=p, own=own, action=a, result=r, seconds=seconds)
        return Retrying(plan=p, own=own, action=a, reason=r.detail, attempt=self._failed(a), result=r, seconds=seconds)

    def confirm(self, spec: LoadedSpec) -> Retrying | None:
        """Observe once more only to see that the last action took effect (`apply PLAN` ends
        so); nothing is planned, so the outcome carries an empty plan."""
        if self.pending is None:
            return None
        return self._check(spec, self.observe(spec, self.node), Plan(self.node))

    def _check(self, spec: LoadedSpec, own: NodeObservation, p: Plan) -> Retrying | None:
        if self.pending is None:
            return None
        digest, a = self.pending
        self.pending = None
        why = postcondition.unmet(a, own) if digest == spec.digest else None  # planned from another spec
        if why is None:
            self.failures.pop(_key(a), None)
            return None
        return Retrying(plan=p, own=own, action=a, reason=f"did not take effect: {why}", attempt=self._failed(a))

    def _failed(self, a: Action) -> int:
        self.failures[_key(a)] = self.failures.get(_key(a), 0) + 1
        return self.failures[_key(a)]
