"""The house rules, checked on every run: the layer contracts (import-linter, in
pyproject.toml), ruff, and mypy --strict on the package.  A contract broken by a later
change fails here, naming the import chain."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from tests.conftest import need

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _tool(name: str) -> str:
    path = os.path.join(BIN, name)
    need(os.access(path, os.X_OK), f"{name} is not installed in the test environment (pip install -e '.[test]')")
    return path


def _run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def test_layer_contracts_hold() -> None:
    r = _run([_tool("lint-imports"), "--no-cache"])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_ruff_is_clean() -> None:
    r = _run([_tool("ruff"), "check", "--no-cache", "reconciler", "tests", "bench", "lab", "demo"])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_mypy_strict_on_the_package() -> None:
    r = _run([sys.executable, "-m", "mypy", "--no-incremental"], timeout=900)
    assert r.returncode == 0 and "Success" in r.stdout, r.stdout[-4000:] + r.stderr[-2000:]


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(ROOT, "reconciler", "plan")) if f.endswith(".py")))
def test_the_planner_opens_no_file(name: str) -> None:
    """Imports are the contracts' business; a builtin open() is not an import."""
    tree = ast.parse(open(os.path.join(ROOT, "reconciler", "plan", name)).read())
    calls = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "open"]
    assert not calls, f"reconciler/plan/{name} calls open() at lines {calls}: the planner must stay pure"
