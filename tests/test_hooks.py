"""The spec's hooks: real programs run by the agent, in the background, with the facts in the
environment; refused when another user could change them; a hung hook never holds the agent."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from reconciler.agent.loop import Converged, OperatorNeeded
from reconciler.agent.run import Agent
from reconciler.execute.hooks import run_hook
from tests.conftest import need_root
from tests.test_loop import SPEC_FILE, Node, _Peer, log_lines, split_brain  # noqa: F401 - log_lines is a fixture
from tests.test_planner_cases import snap

RECORDER = """#!/bin/sh
# writes its RECONCILER_* environment and its arguments, one JSON object per run
{ printf '{"args": "%s"' "$*"; env | grep '^RECONCILER_' | sort | while IFS='=' read -r k v; do
    printf ', "%s": "%s"' "$k" "$v"; done; printf '}\\n'; } >> "$(dirname "$0")/runs.jsonl"
"""


def _recorder(d: Path) -> Path:
    prog = d / "record"
    prog.write_text(RECORDER)
    prog.chmod(0o755)
    return prog


def _runs(d: Path) -> list[dict[str, str]]:
    f = d / "runs.jsonl"
    return [json.loads(ln) for ln in f.read_text().splitlines()] if f.exists() else []


def _spec(tmp: Path, hooks: str) -> str:
    path = tmp / "cluster.yaml"
    path.write_text(Path(SPEC_FILE).read_text() + "\nhooks:\n" + hooks)
    return str(path)


def _agent(path: str, n: Node) -> Agent:
    agent = Agent(path, "mx1", serve=False, observe=n.observe)
    agent.peer = _Peer(n.peer)  # type: ignore[assignment]
    agent.loop.execute = n.execute
    return agent


def _join(agent: Agent) -> None:
    for t in list(agent.hook_threads):
        t.join(timeout=30)


def test_operator_needed_runs_once_with_the_facts(tmp_path: Path) -> None:
    need_root()
    prog = _recorder(tmp_path)
    path = _spec(tmp_path, f"  operator_needed: [[{prog}, paged]]\n")
    n = Node(split_brain(snap("converged", "mx1")), snap("converged", "mx2"))
    agent = _agent(path, n)
    outcomes = [agent.step() for _ in range(3)]
    _join(agent)
    assert all(isinstance(o, OperatorNeeded) for o in outcomes)
    runs = _runs(tmp_path)
    assert len(runs) == 1, runs  # once per wait, not per step
    r = runs[0]
    assert r["args"] == "paged"
    assert r["RECONCILER_EVENT"] == "operator_needed" and r["RECONCILER_NODE"] == "mx1"
    assert r["RECONCILER_CLUSTER"] == agent.spec.model.cluster and r["RECONCILER_PRIMARY"] == "mx1"
    assert r["RECONCILER_ACTION"].startswith("drbd r0") and "split brain" in r["RECONCILER_REASON"]
    assert "drbdadm connect --discard-my-data r0" in r["RECONCILER_REASON"]
    n.own = snap("converged", "mx1")  # resolved ...
    assert isinstance(agent.step(), Converged)
    n.own = split_brain(n.own)  # ... and again: news again
    agent.step()
    _join(agent)
    assert len(_runs(tmp_path)) == 2


def test_role_change_runs_when_the_converged_role_changes(tmp_path: Path) -> None:
    need_root()
    prog = _recorder(tmp_path)
    path = _spec(tmp_path, f"  role_change: [[{prog}]]\n")
    agent = _agent(path, Node(snap("converged", "mx1"), snap("converged", "mx2")))
    assert isinstance(agent.step(), Converged)  # the first convergence: the role before is unknown
    agent._converged_as("primary")  # the same role again
    _join(agent)
    assert _runs(tmp_path) == []
    agent._converged_as("secondary")
    _join(agent)
    runs = _runs(tmp_path)
    assert [(r["RECONCILER_EVENT"], r["RECONCILER_ROLE"], r["RECONCILER_PREVIOUS_ROLE"]) for r in runs] == [
        ("role_change", "secondary", "primary")]


def test_a_hook_another_user_can_change_is_refused_not_run(tmp_path: Path, log_lines: list[str]) -> None:  # noqa: F811
    need_root()
    d = tmp_path / "open"
    d.mkdir()
    prog = _recorder(d)
    d.chmod(0o777)  # anyone may replace the program: no sticky bit
    r = run_hook([str(prog)], {"event": "x"}, 5)
    assert not r.ok and r.detail.startswith("refused: ") and "fix" in r.detail
    assert _runs(d) == []
    d.chmod(0o755)
    os.chown(prog, 65534, 65534)  # owned by nobody
    r = run_hook([str(prog)], {"event": "x"}, 5)
    assert not r.ok and "refused" in r.detail and _runs(d) == []
    os.chown(prog, 0, 0)
    assert run_hook([str(prog)], {"event": "x"}, 5).ok and len(_runs(d)) == 1


def test_a_hung_hook_is_killed_at_its_timeout_and_never_holds_the_agent(tmp_path: Path,
                                                                       log_lines: list[str]) -> None:  # noqa: F811
    need_root()
    prog = tmp_path / "hang"
    prog.write_text("#!/bin/sh\nsleep 30 &\nexec sleep 30\n")
    prog.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP)
    path = _spec(tmp_path, f"  operator_needed: [[{prog}]]\n  timeout_s: 0.5\n")
    agent = _agent(path, Node(split_brain(snap("converged", "mx1")), snap("converged", "mx2")))
    t0 = time.monotonic()
    assert isinstance(agent.step(), OperatorNeeded)
    assert time.monotonic() - t0 < 0.5 + 0.4  # the step did not wait for the hook (observation included)
    _join(agent)
    assert any("hook operator_needed" in ln and "timed out after 0.5s" in ln for ln in log_lines), log_lines


@pytest.mark.parametrize("argv, reason", [
    ("[[logger, x]]", "absolute path"),
    ("[[]]", "must not be empty"),
])
def test_bad_hooks_are_refused_by_validate(tmp_path: Path, argv: str, reason: str) -> None:
    from reconciler.spec.load import SpecError, load_spec

    path = _spec(tmp_path, f"  role_change: {argv}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.key.startswith("hooks.role_change[0]") and reason in str(info.value), str(info.value)
