"""specs/examples/ is current, and `reconciler plan` on it exits 0 for the converged pair and
2 for the others, in human and JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests import examples_gen

ROOT = examples_gen.ROOT
EX = os.path.join(ROOT, "specs", "examples")
SPEC = os.path.join(ROOT, "specs", "cluster.example.yaml")
MID = os.path.join(EX, "mid-switchover", "cluster.yaml")


def test_committed_examples_are_current():
    for name, files in examples_gen.scenarios().items():
        for fname, content in files.items():
            with open(os.path.join(EX, name, fname)) as f:
                assert f.read() == content, f"specs/examples/{name}/{fname} is stale: run python -m tests.examples_gen"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


CASES = [
    (SPEC, "mx1", "converged", "mx2", 0),
    (SPEC, "mx2", "converged", "mx1", 0),
    (SPEC, "mx1", "fresh-install", "mx2", 2),
    (SPEC, "mx2", "fresh-install", "mx1", 2),
    (MID, "mx2", "mid-switchover", "mx1", 2),
    (MID, "mx1", "mid-switchover", "mx2", 2),
]


@pytest.mark.parametrize("spec,node,scenario,peer,code", CASES)
@pytest.mark.parametrize("as_json", [False, True])
def test_plan_exit_codes(spec, node, scenario, peer, code, as_json):
    args = ["plan", spec, "--node", node, "--observed", os.path.join(EX, scenario, f"{node}.json"),
            "--peer-observed", os.path.join(EX, scenario, f"{peer}.json")] + (["--json"] if as_json else [])
    r = run(*args)
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    if as_json:
        doc = json.loads(r.stdout)
        assert doc["format_version"] == "1.0" and doc["node"] == node
        assert (len(doc["changes"]) == 0) == (code == 0)
    elif code == 0:
        assert "No changes." in r.stdout
    else:
        assert "Plan: " in r.stdout


def test_mid_switchover_shows_the_guard_it_waits_on():
    r = run("plan", MID, "--node", "mx2", "--observed", os.path.join(EX, "mid-switchover", "mx2.json"),
            "--peer-observed", os.path.join(EX, "mid-switchover", "mx1.json"))
    # mx1 has stopped its service and is about to stop PostgreSQL: everything on mx2 waits,
    # the service too (mx1 still holds the floating addresses: it has not released the role)
    assert "waiting: peer mx1 PostgreSQL is still a writable primary" in r.stdout
    assert "waiting: peer mx1 is still DRBD Primary on r0" in r.stdout
    assert "start service greenarrow: waiting: peer mx1 still holds 192.0.2.10/24 on eth0 (and 42 more)" in r.stdout
    assert "Blocked: 5 action(s)" in r.stdout


def test_bad_snapshot_is_one_line_and_exit_1(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"node": "mx1", "interfaces": {"eth0": {"addresses": [{"address": 5}]}}}')
    r = run("plan", SPEC, "--node", "mx1", "--observed", str(bad))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = run("plan", SPEC, "--node", "mx9", "--observed", str(bad))
    assert r.returncode == 1 and "mx9" in r.stderr


def test_validate_takes_several_files_as_pre_commit_passes_them(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster: x\nnodes: {}\n")
    r = run("validate", SPEC, os.path.join(ROOT, "specs", "demo.yaml"))
    assert r.returncode == 0 and r.stdout.count("valid (") == 2
    r = run("validate", SPEC, str(bad))
    assert r.returncode == 1 and "valid (" in r.stdout
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(str(bad))


def test_snapshots_round_trip_losslessly_through_json():
    from reconciler.model import NodeObservation

    for scenario in sorted(os.listdir(EX)):
        for name in sorted(os.listdir(os.path.join(EX, scenario))):
            if name.endswith(".json"):
                text = open(os.path.join(EX, scenario, name)).read()
                obs = NodeObservation.from_json(text)
                again = NodeObservation.from_json(obs.to_json())
                assert again == obs and again.to_json() == obs.to_json()
                assert json.loads(obs.to_json()) == json.loads(text)
