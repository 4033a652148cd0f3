"""Architecture rules as tests: the planner is pure, and every action kind has an executor."""

from __future__ import annotations

import ast
import os

from reconciler.execute.dispatch import kinds_with_executor
from reconciler.plan.actions import Kind
from reconciler.spec.load import load_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAN_DIR = os.path.join(ROOT, "reconciler", "plan")
FORBIDDEN = {"subprocess", "socket", "psycopg", "pyroute2", "os", "time", "random", "threading", "http",
             "reconciler.observe", "reconciler.execute", "reconciler.agent", "reconciler.peer", "reconciler.netlink",
             "reconciler.pgrun", "reconciler._cmd", "datetime", "shutil", "pathlib"}


def imports_of(path: str) -> set[str]:
    tree = ast.parse(open(path).read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_the_planner_does_no_io():
    for name in sorted(os.listdir(PLAN_DIR)):
        if not name.endswith(".py"):
            continue
        for mod in imports_of(os.path.join(PLAN_DIR, name)):
            bad = [f for f in FORBIDDEN if mod == f or mod.startswith(f + ".")]
            assert not bad, f"reconciler/plan/{name} imports {mod}: the planner must stay pure"
        src = open(os.path.join(PLAN_DIR, name)).read()
        assert "open(" not in src, f"reconciler/plan/{name} opens a file"


def test_every_action_kind_has_an_executor():
    spec = load_spec(os.path.join(ROOT, "specs", "cluster.example.yaml"))
    assert kinds_with_executor(spec) == set(Kind)
