"""The one loop that `run`, `apply` and `apply PLAN` share: its typed outcomes, the check that
an action's effect shows in the next observation, and the guards only an operator lifts
(reported once, re-checked at the drift interval instead of the 50 ms poll).

The planner runs on the committed example snapshots; the node is a snapshot the fake
executor changes (or, to show a postcondition failure, leaves alone)."""

from __future__ import annotations

import ast
import logging
import os
import shutil
import time

import pytest

from reconciler.address import parse
from reconciler.agent import run as agent_run
from reconciler.agent.loop import Acted, Converged, Loop, OperatorNeeded, Retrying, Waiting
from reconciler.agent.run import Agent
from reconciler.execute.dispatch import Result
from reconciler.model import NodeObservation, ServiceObs
from reconciler.plan import operator, postcondition
from reconciler.plan.actions import Action, Guard, Kind
from reconciler.plan.kinds import ReplicationSource
from tests.gitrepo import running, write
from tests.test_planner_cases import ROOT, SPEC, snap, spec_with, with_iface

SPEC_FILE = os.path.join(ROOT, "specs", "cluster.example.yaml")
MISSING = parse("192.0.2.33/24")


def _without(obs: NodeObservation, address: str) -> NodeObservation:
    eth0 = obs.interfaces["eth0"]
    return with_iface(obs, "eth0", addresses=tuple(a for a in eth0.addresses if a.address != address))


def split_brain(obs: NodeObservation) -> NodeObservation:
    d = obs.drbd["r0"].model_copy(update={"split_brain": True, "connection": "StandAlone"})
    return obs.model_copy(update={"drbd": {"r0": d}})


OK = Result(True, "")


class Node:
    """One node's observed state; `execute` makes an address action take effect, or not."""

    def __init__(self, own: NodeObservation, peer: NodeObservation | None, effective: bool = True,
                 result: Result = OK) -> None:
        self.own, self.peer, self.effective, self.result = own, peer, effective, result
        self.ran: list[Action] = []
        self.observed = 0

    def observe(self, spec, node: str) -> NodeObservation:
        self.observed += 1
        return self.own

    def fetch_peer(self) -> NodeObservation | None:
        return self.peer

    def execute(self, spec, a: Action) -> Result:
        self.ran.append(a)
        if self.result.ok and self.effective and a.kind is Kind.ADD_ADDRESSES:
            full = snap("converged", "mx1").interfaces[a.target]
            self.own = with_iface(self.own, a.target, addresses=full.addresses)
        return self.result

    def loop(self) -> Loop:
        return Loop(self.own.node, self.observe, self.fetch_peer, self.execute)


# ---- the typed outcomes -------------------------------------------------------------------
def test_converged_when_nothing_is_planned():
    n = Node(snap("converged", "mx1"), snap("converged", "mx2"))
    o = n.loop().step(SPEC)
    assert isinstance(o, Converged) and o.plan.empty and not n.ran


def test_acted_then_converged_once_the_effect_shows():
    n = Node(_without(snap("converged", "mx1"), MISSING), snap("converged", "mx2"))
    loop = n.loop()
    o = loop.step(SPEC)
    assert isinstance(o, Acted) and o.action.kind is Kind.ADD_ADDRESSES and o.action.items == (MISSING,)
    assert o.result.ok and loop.pending is not None
    assert isinstance(loop.step(SPEC), Converged)
    assert loop.pending is None and not loop.failures and len(n.ran) == 1


def test_waiting_on_a_guard_that_lifts_by_itself():
    spec = spec_with(**{"primary: mx1": "primary: mx2"})
    n = Node(snap("converged", "mx2"), snap("converged", "mx1"))
    o = n.loop().step(spec)
    assert isinstance(o, Waiting) and not n.ran
    assert {g.name for g in o.guards} == {"peer_not_primary"} and "still DRBD Primary" in o.reason


def test_an_unreachable_peer_is_waited_for_not_handed_to_the_operator():
    spec = spec_with(**{"primary: mx1": "primary: mx2"})
    o = Node(snap("converged", "mx2"), None).loop().step(spec)
    assert isinstance(o, Waiting) and "peer_reachable" in {g.name for g in o.guards}


def test_operator_needed_on_a_split_brain():
    n = Node(split_brain(snap("converged", "mx1")), snap("converged", "mx2"))
    o = n.loop().step(SPEC)
    assert isinstance(o, OperatorNeeded) and o.action.kind is Kind.DRBD_CONNECT and not n.ran
    assert [g.name for g in o.guards] == ["no_split_brain"] and "to resolve: " in o.reason


def test_retrying_after_a_failure_counts_the_attempts():
    n = Node(_without(snap("converged", "mx1"), MISSING), snap("converged", "mx2"), result=Result(False, "boom"))
    loop = n.loop()
    first, second = loop.step(SPEC), loop.step(SPEC)
    assert isinstance(first, Retrying) and isinstance(second, Retrying)
    assert (first.attempt, second.attempt) == (1, 2) and first.reason == "boom" and not first.not_in_effect
    assert loop.pending is None, "a failed action has no effect to check"


def test_an_action_whose_effect_does_not_show_is_retried_and_says_why():
    n = Node(_without(snap("converged", "mx1"), MISSING), snap("converged", "mx2"), effective=False)
    loop = n.loop()
    outcomes = [loop.step(SPEC) for _ in range(4)]
    assert [type(o) for o in outcomes] == [Acted, Retrying, Acted, Retrying]
    missed = outcomes[1]
    assert isinstance(missed, Retrying) and missed.not_in_effect and missed.result is None
    assert missed.action.kind is Kind.ADD_ADDRESSES and missed.attempt == 1
    assert missed.reason == f"did not take effect: not held as ours on eth0: {MISSING}"
    assert outcomes[3].attempt == 2 and len(n.ran) == 2, "the check ran instead of a second action at once"


def test_the_check_is_skipped_when_the_spec_changed_meanwhile():
    n = Node(_without(snap("converged", "mx1"), MISSING), snap("converged", "mx2"), effective=False)
    loop = n.loop()
    assert isinstance(loop.step(SPEC), Acted)
    other = spec_with(**{"192.0.2.20-192.0.2.59/24": "192.0.2.20-192.0.2.32/24"})
    assert other.digest != SPEC.digest
    assert not isinstance(loop.step(other), Retrying)


def test_admit_refuses_without_running_and_seen_replaces_the_observation():
    n = Node(_without(snap("converged", "mx1"), MISSING), snap("converged", "mx2"))
    loop = n.loop()
    o = loop.step(SPEC, admit=lambda a: "not as saved", seen=(n.own, n.peer))
    assert isinstance(o, OperatorNeeded) and o.reason == "not as saved" and o.guards == ()
    assert not n.ran and n.observed == 0
    assert isinstance(loop.step(SPEC, admit=lambda a: None), Acted)


def test_confirm_observes_only_while_an_effect_is_unchecked():
    n = Node(_without(snap("converged", "mx1"), MISSING), snap("converged", "mx2"), effective=False)
    loop = n.loop()
    assert loop.confirm(SPEC) is None and n.observed == 0
    loop.step(SPEC)
    missed = loop.confirm(SPEC)
    assert isinstance(missed, Retrying) and missed.not_in_effect
    assert loop.confirm(SPEC) is None


# ---- postconditions -----------------------------------------------------------------------
def test_every_kind_has_a_postcondition_or_says_why_not():
    assert set(postcondition.CHECKS) | set(postcondition.NOT_OBSERVABLE) == set(Kind)
    assert not set(postcondition.CHECKS) & set(postcondition.NOT_OBSERVABLE)


def _pg(obs: NodeObservation, **kw) -> NodeObservation:
    return obs.model_copy(update={"postgres": obs.postgres.model_copy(update=kw)})


def _drbd(obs: NodeObservation, **kw) -> NodeObservation:
    return obs.model_copy(update={"drbd": {"r0": obs.drbd["r0"].model_copy(update=kw)}})


PRIMARY, STANDBY = snap("converged", "mx1"), snap("converged", "mx2")
SOURCE = ReplicationSource(host="10.0.0.1", port=5432, node="mx2")
CASES = [  # action, observation after it, None or a part of the reason it did not take effect
    (Action(Kind.START_SERVICE, "greenarrow", ""), PRIMARY, None),
    (Action(Kind.START_SERVICE, "greenarrow", ""),
     PRIMARY.model_copy(update={"services": {"greenarrow": ServiceObs(active=False, failed=True)}}),
     "service greenarrow is not active"),
    (Action(Kind.STOP_SERVICE, "greenarrow", ""), PRIMARY, "service greenarrow is still active"),
    (Action(Kind.ADD_ADDRESSES, "eth0", "", items=(MISSING,)), PRIMARY, None),
    (Action(Kind.ADD_ADDRESSES, "eth0", "", items=(MISSING,)), _without(PRIMARY, MISSING), "not held as ours"),
    (Action(Kind.REMOVE_ADDRESSES, "eth0", "", items=(MISSING,)), PRIMARY, f"still held on eth0: {MISSING}"),
    (Action(Kind.REMOVE_ADDRESSES, "eth0", "", items=(MISSING,)), _without(PRIMARY, MISSING), None),
    (Action(Kind.SET_PROMOTE_SECONDARIES, "eth0", ""), with_iface(PRIMARY, "eth0", promote_secondaries=False),
     "promote_secondaries is still 0"),
    (Action(Kind.MOUNT, "/var/hvmail", ""), PRIMARY, None),
    (Action(Kind.UNMOUNT, "/var/hvmail", ""), PRIMARY, "/var/hvmail is still mounted"),
    (Action(Kind.MOUNT, "/var/hvmail", ""), STANDBY, "/var/hvmail is not mounted"),
    (Action(Kind.DRBD_CONNECT, "r0", ""), split_brain(PRIMARY), "r0 is still StandAlone"),
    (Action(Kind.DRBD_UP, "r0", ""), _drbd(PRIMARY, configured=False), "r0 is not up"),
    (Action(Kind.DRBD_PRIMARY, "r0", ""), STANDBY, "r0 is Secondary, not Primary"),
    (Action(Kind.DRBD_SECONDARY, "r0", ""), PRIMARY, "r0 is still Primary"),
    (Action(Kind.DRBD_SECONDARY, "r0", ""), _drbd(PRIMARY, configured=False), None),
    (Action(Kind.PG_PROMOTE, "postgres", ""), PRIMARY, None),
    (Action(Kind.PG_PROMOTE, "postgres", ""), STANDBY, "still in recovery"),
    (Action(Kind.PG_PROMOTE, "postgres", ""), _pg(STANDBY, in_recovery=None), None),  # not answering yet
    (Action(Kind.PG_START_PRIMARY, "postgres", ""), _pg(PRIMARY, running=False), "not running"),
    (Action(Kind.PG_STOP, "postgres", ""), PRIMARY, "still running"),
    (Action(Kind.PG_START_STANDBY, "postgres", "", payload=SOURCE), STANDBY, None),
    (Action(Kind.PG_START_STANDBY, "postgres", "", payload=SOURCE), PRIMARY, "writable, not a standby"),
    (Action(Kind.PG_RETARGET, "postgres", "", payload=SOURCE), STANDBY, None),
    (Action(Kind.PG_RETARGET, "postgres", "", payload=ReplicationSource(host="10.0.0.9", port=5432, node="mx2")),
     STANDBY, "follows 10.0.0.1:5432, not 10.0.0.9:5432"),
    (Action(Kind.PG_CLONE, "postgres", "", payload=SOURCE), _pg(STANDBY, running=False, data_dir_empty=True),
     "still empty"),
    (Action(Kind.PG_CRASH_RECOVER, "postgres", ""), _pg(PRIMARY, running=False, cluster_state="in production"),
     "not 'shut down'"),
    (Action(Kind.PG_CHECKPOINT, "postgres", ""), _pg(PRIMARY, control_timeline=1, timeline=2),
     "still shows timeline 1"),
    (Action(Kind.AWAIT, "postgres", ""), PRIMARY, None),
]


@pytest.mark.parametrize("a,obs,expect", CASES, ids=[f"{c[0].kind.value}-{i}" for i, c in enumerate(CASES)])
def test_postcondition(a: Action, obs: NodeObservation, expect: str | None):
    why = postcondition.unmet(a, obs)
    if expect is None:
        assert why is None
    else:
        assert why is not None and expect in why, why


def test_a_part_that_could_not_be_read_tells_nothing():
    a = Action(Kind.STOP_SERVICE, "greenarrow", "")
    failed = PRIMARY.model_copy(update={"errors": (NodeObservation.failure("services", "systemctl timed out"),)})
    assert postcondition.unmet(a, PRIMARY) is not None and postcondition.unmet(a, failed) is None
    assert postcondition.unmet(a, PRIMARY.model_copy(update={"services": {}})) is None


# ---- guards only an operator lifts --------------------------------------------------------
def _guard_names_in_the_planner() -> set[str]:
    names = set()
    plan_dir = os.path.join(ROOT, "reconciler", "plan")
    for f in os.listdir(plan_dir):
        if not f.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(open(os.path.join(plan_dir, f)).read())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Guard" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names.add(first.value)
    return names


def test_operator_only_guards_are_guards_the_planner_makes():
    names = _guard_names_in_the_planner()
    assert operator.OPERATOR_ONLY <= names, operator.OPERATOR_ONLY - names
    assert {"no_split_brain", "target_empty", "declared_fenced"} <= operator.OPERATOR_ONLY
    assert not {"peer_reachable", "peer_not_primary", "peer_not_writable", "connected", "local_uptodate",
                "same_revision", "observed", "pg_answers"} & operator.OPERATOR_ONLY


def test_an_action_is_operator_only_when_every_unmet_guard_is():
    op, moving = Guard("no_split_brain", False, "x"), Guard("peer_reachable", False, "y")
    assert operator.operator_only(Action(Kind.DRBD_CONNECT, "r0", "", guards=(op,)))
    assert operator.operator_only(Action(Kind.DRBD_CONNECT, "r0", "", guards=(op, Guard("connected", True, "z"))))
    assert not operator.operator_only(Action(Kind.DRBD_CONNECT, "r0", "", guards=(op, moving)))
    assert not operator.operator_only(Action(Kind.DRBD_CONNECT, "r0", ""))


# ---- the agent: report once, re-check at the drift interval ------------------------------
class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
    h, logger = _Lines(), logging.getLogger("reconciler")
    logger.addHandler(h)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield h.lines
    finally:
        logger.removeHandler(h)
        logger.setLevel(level)


class _Peer:
    def __init__(self, obs: NodeObservation | None) -> None:
        self.obs = obs

    def fetch(self) -> NodeObservation | None:
        return self.obs

    def update(self, spec, node: str) -> None:
        pass


def _agent(path: str, n: Node) -> Agent:
    agent = Agent(path, "mx1", serve=False, observe=n.observe)
    agent.peer = _Peer(n.peer)
    agent.loop.execute = n.execute
    return agent


def test_the_agent_reports_an_operator_only_wait_once_and_rechecks_at_the_drift_interval(log_lines):
    n = Node(split_brain(snap("converged", "mx1")), snap("converged", "mx2"))
    agent = _agent(SPEC_FILE, n)
    outcomes = [agent.step() for _ in range(3)]
    assert all(isinstance(o, OperatorNeeded) for o in outcomes)
    said = [ln for ln in log_lines if "split brain" in ln]
    assert len(said) == 1 and said[0].startswith("mx1: waiting: operator needed: drbd r0: ")
    assert "to resolve: " in said[0]
    assert agent._delay(outcomes[0]) == SPEC.model.agent.drift_check_interval_s > 10 * agent_run.WAIT_POLL_S
    assert agent.status_line(outcomes[0]).startswith("waiting for the operator on drbd r0")
    assert not n.ran
    n.own = snap("converged", "mx1")  # the operator resolved it ...
    assert isinstance(agent.step(), Converged)
    n.own = split_brain(n.own)  # ... and it happened again: news again
    assert isinstance(agent.step(), OperatorNeeded)
    assert len([ln for ln in log_lines if "split brain" in ln]) == 2


def test_the_running_agent_does_not_poll_an_operator_only_wait_but_wakes_on_a_spec_change(tmp_path, log_lines):
    path = str(tmp_path / "cluster.yaml")
    shutil.copy(SPEC_FILE, path)
    n = Node(split_brain(snap("converged", "mx1")), snap("converged", "mx2"))
    agent = _agent(path, n)
    with running(agent):
        deadline = time.monotonic() + 10
        while not agent.watching.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.0)
        polled = n.observed
        assert 1 <= polled <= 2, f"observed {polled} times in 1 s while only an operator can act"
        write(path, open(SPEC_FILE).read().replace("drift_check_interval_s: 5", "drift_check_interval_s: 6"))
        while n.observed == polled and time.monotonic() < deadline:
            time.sleep(0.02)
        assert n.observed > polled, "a spec change did not wake the agent"
    assert len([ln for ln in log_lines if "operator needed" in ln]) == 1


def test_the_agent_logs_an_action_that_did_not_take_effect_and_backs_off(log_lines):
    n = Node(_without(snap("converged", "mx1"), MISSING), snap("converged", "mx2"), effective=False)
    agent = _agent(SPEC_FILE, n)
    acted, missed = agent.step(), agent.step()
    assert isinstance(acted, Acted) and agent._delay(acted) == 0
    assert isinstance(missed, Retrying) and agent._delay(missed) == agent_run.BACKOFF_BASE_S
    line = [ln for ln in log_lines if "did not take effect" in ln]
    assert line == [f"mx1: + {MISSING} on eth0: did not take effect: not held as ours on eth0: {MISSING} (attempt 1)"]
    assert agent.status_line(missed).startswith(f"failed {MISSING} on eth0: did not take effect")
    assert agent.metrics.not_in_effect.labels("add_addresses")._value.get() == 1
