"""The data-loss levers of DRBD are never built by the package's code.

Scans every string constant (f-string pieces included) of reconciler/**.py, leaving out
docstrings and comments, for --force, --discard-my-data, --overwrite-data-of-peer and the
word invalidate.  The one exception is the planner's split-brain *advice* to an operator,
and the planner is checked to import nothing that can run a program.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "reconciler"
LEVERS = re.compile(r"--force\b|--discard-my-data|--overwrite-data-of-peer|\binvalidate\b")
# (file, function): text shown to a human, never executed (the planner does no I/O).
ADVICE = {("reconciler/plan/drbd.py", "split_brain_commands")}
RUNNERS = {"subprocess", "os", "reconciler._cmd", "reconciler.execute", "pty", "shlex"}


def _docstring_ids(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def code_strings(source: str) -> Iterator[tuple[int, str, str]]:
    """(line, enclosing function or "", text) of every non-docstring string constant."""
    tree = ast.parse(source)
    docs = _docstring_ids(tree)

    def visit(node: ast.AST, func: str) -> Iterator[tuple[int, str, str]]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func = node.name
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and id(node) not in docs:
            text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            yield node.lineno, func, text
        for child in ast.iter_child_nodes(node):
            yield from visit(child, func)

    yield from visit(tree, "")


def violations(rel: str, source: str) -> list[str]:
    return [
        f"{rel}:{line} in {func or '<module>'}: {text!r}"
        for line, func, text in code_strings(source)
        if LEVERS.search(text) and (rel, func) not in ADVICE
    ]


def test_no_data_loss_levers_in_code() -> None:
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(PKG.parent))
        found += violations(rel, path.read_text())
    assert not found, "data-loss DRBD options in code:\n" + "\n".join(found)


def test_scanner_catches_levers_and_ignores_prose() -> None:
    src = (
        '"""Never use --force here."""\n'
        "# nor --discard-my-data\n"
        "def f():\n"
        '    """invalidate is mentioned in a docstring only."""\n'
        '    return ["drbdadm", "primary", "--force", "r0"]\n'
        'X = f"drbdadm connect --discard-my-data {1}"\n'
        'Y = ["drbdadm", "invalidate", "r0"]\n'
        'Z = "--overwrite-data-of-peer"\n'
    )
    found = violations("reconciler/x.py", src)
    assert [v.split(":")[1].split()[0] for v in found] == ["5", "6", "7", "8"]


def test_advice_functions_live_where_nothing_runs() -> None:
    for rel, _func in ADVICE:
        tree = ast.parse((PKG.parent / rel).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in imported if m in RUNNERS or m.startswith("reconciler.execute")}, (rel, imported)
