"""Architecture rules as tests: the planner is pure (every action kind having an executor is
checked by mypy in tests/test_action_kinds.py)."""

from __future__ import annotations

import ast
import os

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
