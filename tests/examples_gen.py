"""Generate specs/examples/: observation snapshots of the example cluster in four situations.

The snapshots come from the simulated cluster driven by the real planner, so they are
mutually consistent (the peer snapshot always matches).  `python -m tests.examples_gen`
rewrites them; tests/test_examples.py checks that the committed copies are current.
"""

from __future__ import annotations

import os
import sys

from reconciler.spec.load import load_spec
from tests.sim.cluster import SimCluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "specs", "cluster.example.yaml")


def _converge(c: SimCluster, rounds: int = 30) -> None:
    for _ in range(rounds):
        for n in ("mx1", "mx2"):
            c.agent_step(n)
            c.replicate()


def _step_until(c: SimCluster, node: str, kind: str, limit: int = 40) -> None:
    """Let both agents act until `node`'s next action is `kind`."""
    for _ in range(limit):
        a = c.plan_for(node).next_action
        if a is not None and a.kind.value == kind:
            return
        for n in ("mx1", "mx2"):
            if n == node:
                c.agent_step(n)
            c.replicate()
    raise RuntimeError(f"{node} never reached {kind}")


def scenarios() -> dict[str, dict[str, str]]:
    """scenario -> file name -> content."""
    text = open(EXAMPLE, "rb").read()
    spec1 = load_spec(EXAMPLE)
    switched = text.replace(b"\nprimary: mx1 ", b"\nprimary: mx2 ")
    assert switched != text
    switched = switched.replace(b"$schema=cluster.schema.json", b"$schema=../../cluster.schema.json")
    spec2 = load_spec("cluster.yaml", switched)
    out: dict[str, dict[str, str]] = {}

    fresh = SimCluster([spec1], fresh=True)
    out["fresh-install"] = {f"{n}.json": fresh.observe(n).to_json() + "\n" for n in ("mx1", "mx2")}

    c = SimCluster([spec1])
    _converge(c)
    out["converged"] = {f"{n}.json": c.observe(n).to_json() + "\n" for n in ("mx1", "mx2")}

    c.specs.append(spec2)
    for node in c.world.nodes.values():
        node.spec_version = 1
    _step_until(c, "mx1", "pg_stop")
    files = {f"{n}.json": c.observe(n).to_json() + "\n" for n in ("mx1", "mx2")}
    files["cluster.yaml"] = switched.decode()
    out["mid-switchover"] = files
    return out


def main() -> int:
    for name, files in scenarios().items():
        d = os.path.join(ROOT, "specs", "examples", name)
        os.makedirs(d, exist_ok=True)
        for fname, content in files.items():
            with open(os.path.join(d, fname), "w") as f:
                f.write(content)
    print("wrote specs/examples/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
