"""Action kinds: one row each (plan/kinds.py), one executor each (execute/dispatch.py), and
a typed payload.  A kind left out of either `match` is a type error: mypy --strict is run
here on copies of both modules with one kind's case taken out, and must name that kind."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.plan.actions import Action
from reconciler.plan.kinds import DrbdMount, Kind, ReplicationSource
from tests.conftest import need

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATCHES = {"kinds": os.path.join(ROOT, "reconciler", "plan", "kinds.py"),
           "dispatch": os.path.join(ROOT, "reconciler", "execute", "dispatch.py")}


def without_case(src: str, kind: Kind) -> str | None:
    """`src` with the `case Kind.X:` branch of `kind` (its line and its body) taken out."""
    lines = src.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == f"case Kind.{kind.name}:"), None)
    if start is None:
        return None
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while len(lines[end]) - len(lines[end].lstrip()) > indent:
        end += 1
    return "".join(lines[:start] + lines[end:])


def test_a_kind_left_out_of_its_row_or_its_executor_is_a_mypy_error(tmp_path: Path) -> None:
    need(importlib.util.find_spec("mypy") is not None, "mypy (the test extra) checks that every kind has a row and an executor")
    files = []
    for name, path in MATCHES.items():
        src = open(path).read()
        files.append(tmp_path / f"{name}_whole.py")
        files[-1].write_text(src)
        for k in Kind:
            mutant = without_case(src, k)
            if mutant is not None:  # else the whole module is the mutant, and fails below
                files.append(tmp_path / f"{name}_without_{k.value}.py")
                files[-1].write_text(mutant)
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-error-summary",
                        "--cache-dir", str(tmp_path / "cache"), *map(str, files)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, "MYPYPATH": ROOT})
    assert "error: Cannot find" not in r.stdout and not r.stderr.strip(), r.stdout + r.stderr
    missing = {(m[0], m[1]) for m in re.findall(r"(\w+)\.py:\d+: error: Argument 1 to \"assert_never\" has incompatible "
                                                r"type \"Literal\[Kind\.(\w+)\]\"", r.stdout)}
    left_out = sorted(f"{name}.py: Kind.{k}" for name, k in missing if name.endswith("_whole"))
    assert not left_out, f"kinds without a case (row or executor): {left_out}"
    expected = {(f"{name}_without_{k.value}", k.name) for name in MATCHES for k in Kind}
    assert missing == expected, r.stdout


def test_the_rows_keep_what_the_four_tables_said() -> None:
    assert {k for k in Kind if k.row.changes_role} == {
        Kind.DRBD_PRIMARY, Kind.MOUNT, Kind.PG_PROMOTE, Kind.PG_START_PRIMARY, Kind.ADD_ADDRESSES,
        Kind.ADOPT_ADDRESSES, Kind.START_SERVICE,
        Kind.STOP_SERVICE, Kind.REMOVE_ADDRESSES, Kind.UNMOUNT, Kind.DRBD_SECONDARY, Kind.PG_STOP,
    }
    assert {k for k in Kind if k.row.addresses} == {Kind.ADD_ADDRESSES, Kind.REMOVE_ADDRESSES, Kind.ADOPT_ADDRESSES}
    assert {k for k in Kind if k.row.payload is ReplicationSource} == {
        Kind.PG_CLONE, Kind.PG_REWIND, Kind.PG_START_STANDBY, Kind.PG_RETARGET}
    assert {k for k in Kind if k.row.payload is DrbdMount} == {Kind.MOUNT}
    assert "".join(k.row.symbol for k in Kind) == "-+~-~+-++~~~-~+~+~+~~+-+-~~+-?"


def test_an_action_carries_only_its_kinds_payload() -> None:
    src = ReplicationSource("10.0.0.1", 5432, "mx2")
    a = Action(Kind.PG_CLONE, "postgres", "test", payload=src)
    assert a.payload_text == {"host": "10.0.0.1", "port": "5432", "node": "mx2"}  # plan --json `params`, as before
    assert Action(Kind.PG_CLONE, "postgres", "test").payload_text == {}  # none: blocked, or refused when run
    with pytest.raises(TypeError, match="pg_clone takes ReplicationSource, not DrbdMount"):
        Action(Kind.PG_CLONE, "postgres", "test", payload=DrbdMount("r0", "/dev/drbd0"))
    with pytest.raises(TypeError, match="pg_promote takes no payload"):
        Action(Kind.PG_PROMOTE, "postgres", "test", payload=src)


def test_the_executor_refuses_a_replication_kind_without_a_source() -> None:
    from reconciler.execute.dispatch import run_action
    from tests.test_planner_cases import SPEC

    r = run_action(SPEC, Action(Kind.PG_START_STANDBY, "postgres", "test"))
    assert not r.ok and r.detail == "pg_start_standby: no replication source"


def test_the_leadership_kinds_are_refused_by_a_one_shot_executor() -> None:
    """The etcd steps and the watchdog need the lease the agent's keeper holds: `apply` (the
    shared executor) refuses them; the agent runs them (agent/coordination.py)."""
    from reconciler.execute.dispatch import run_action
    from tests.test_planner_cases import SPEC

    for k in (Kind.COORD_ACQUIRE, Kind.COORD_RELEASE, Kind.COORD_PUBLISH, Kind.COORD_WITHDRAW,
              Kind.WATCHDOG_ARM, Kind.WATCHDOG_DISARM):
        r = run_action(SPEC, Action(k, "x", "test"))
        assert not r.ok and r.detail.startswith(f"{k.value}: automatic failover steps are run by the agent"), r.detail
