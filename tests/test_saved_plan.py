"""Saved plans: `plan -out FILE` then `apply FILE` in a network namespace with a real
interface; applied when fresh, refused as stale when the spec or the observed state changed."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

from reconciler.cli.common import UserError
from reconciler.cli.saved_plan import observed_fingerprint, read_saved
from tests.conftest import need_netns
from tests.gitrepo import commit_file, init_repo
from tests.test_planner_cases import snap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = """cluster: t
nodes:
  mx1: {{address: 10.55.0.1}}
primary: mx1
floating_ips:
  interface: v0
  addresses:
    - {addresses}
"""


@pytest.fixture
def ns():
    need_netns()
    name = f"rcsp{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        _in(name, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        for dev in ("v0", "v1", "lo"):
            _in(name, "ip", "link", "set", dev, "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=30)


def _in(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=60,
                          check=check, cwd=ROOT)


def _cli(ns: str, *argv: str) -> subprocess.CompletedProcess:
    return _in(ns, sys.executable, "-m", "reconciler", *argv, check=False)


def _held(ns: str) -> set[str]:
    out = _in(ns, "ip", "-o", "-4", "addr", "show", "dev", "v0").stdout.split()
    return {out[i + 1] for i, w in enumerate(out) if w == "inet"}


def test_a_fresh_saved_plan_runs_exactly_its_actions(ns, tmp_path):
    spec, saved = tmp_path / "cluster.yaml", str(tmp_path / "plan.json")
    spec.write_text(SPEC.format(addresses="10.55.1.1-10.55.1.3/32"))
    r = _cli(ns, "plan", str(spec), "--node", "mx1", "-out", saved)
    assert r.returncode == 2 and "+ 3 addresses" in r.stdout and f"Saved the plan to {saved}" in r.stdout
    doc = json.load(open(saved))
    assert doc["kind"] == "reconciler-saved-plan" and doc["spec_digest"] and doc["observed_fingerprint"]
    assert [c["kind"] for c in doc["plan"]["changes"]] == ["add_addresses"]
    assert _held(ns) == set()
    r = _cli(ns, "apply", saved)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Apply complete: 1 of the saved plan's 1 action(s) ran." in r.stdout
    assert _held(ns) == {"10.55.1.1/32", "10.55.1.2/32", "10.55.1.3/32"}
    again = _cli(ns, "apply", saved)  # what it planned is done: the state it saw is gone
    assert again.returncode == 1 and "Saved plan is stale" in again.stderr


def test_refused_when_the_observed_state_changed(ns, tmp_path):
    spec, saved = tmp_path / "cluster.yaml", str(tmp_path / "plan.json")
    spec.write_text(SPEC.format(addresses="10.55.1.1-10.55.1.3/32"))
    assert _cli(ns, "plan", str(spec), "--node", "mx1", "-out", saved).returncode == 2
    _in(ns, "ip", "addr", "add", "10.55.1.2/32", "dev", "v0")  # someone else acted meanwhile
    r = _cli(ns, "apply", saved)
    assert r.returncode == 1
    assert "Saved plan is stale: the observed state of this node or its peer changed" in r.stderr
    assert _held(ns) == {"10.55.1.2/32"}, "a stale plan changed something"


def test_refused_when_the_spec_changed_at_head(ns, tmp_path):
    repo, saved = str(tmp_path / "repo"), str(tmp_path / "plan.json")
    init_repo(repo)
    commit_file(repo, "cluster.yaml", SPEC.format(addresses="10.55.1.1/32"))
    r = _cli(ns, "plan", "--git", repo, "--path", "cluster.yaml", "--node", "mx1", "-out", saved)
    assert r.returncode == 2 and json.load(open(saved))["source"]["type"] == "git"
    new = commit_file(repo, "cluster.yaml", SPEC.format(addresses="10.55.1.9/32"))
    r = _cli(ns, "apply", saved)
    assert r.returncode == 1 and "Saved plan is stale: the spec changed" in r.stderr and new[:12] in r.stderr
    assert _held(ns) == set()


def test_the_fingerprint_ignores_wal_positions_but_not_roles():
    own, peer = snap("converged", "mx1"), snap("converged", "mx2")
    base = observed_fingerprint(own, peer)
    moved = own.model_copy(update={"postgres": own.postgres.model_copy(update={"current_lsn": "5/0"})})
    assert observed_fingerprint(moved, peer) == base
    stamped = own.model_copy(update={"revision": "f" * 40, "spec_roles": "primary=mx1 fenced=none"})
    assert observed_fingerprint(stamped, peer) == base  # what we apply is not what we observe
    demoted = own.model_copy(update={"postgres": own.postgres.model_copy(update={"in_recovery": True})})
    assert observed_fingerprint(demoted, peer) != base
    other_rev = peer.model_copy(update={"spec_roles": "primary=mx2 fenced=none"})
    assert observed_fingerprint(own, other_rev) != base
    assert observed_fingerprint(own, None) != base


def test_plan_json_and_plan_out_write_one_fingerprint(tmp_path, capsys):
    """`plan --json` and `plan -out` write the same `observed_fingerprint`: the one `apply PLAN` checks."""
    from reconciler.agent.source import stamp
    from reconciler.cli.main import main
    from reconciler.spec.load import load_spec

    ex = os.path.join(ROOT, "specs", "examples", "fresh-install")
    spec_file = os.path.join(ROOT, "specs", "cluster.example.yaml")
    saved = str(tmp_path / "plan.json")
    argv = ["plan", spec_file, "--node", "mx1", "--observed", os.path.join(ex, "mx1.json"),
            "--peer-observed", os.path.join(ex, "mx2.json"), "--json", "-out", saved]
    assert main(argv) == 2
    shown = json.loads(capsys.readouterr().out)["observed_fingerprint"]
    doc = read_saved(saved)
    assert doc["observed_fingerprint"] == doc["plan"]["observed_fingerprint"] == shown
    own = stamp(snap("fresh-install", "mx1"), load_spec(spec_file))
    assert shown == observed_fingerprint(own, snap("fresh-install", "mx2"))


def test_a_spec_is_not_a_saved_plan_and_a_broken_plan_is_an_error(tmp_path):
    assert read_saved(os.path.join(ROOT, "specs", "cluster.example.yaml")) is None
    broken = tmp_path / "p.json"
    broken.write_text(json.dumps({"kind": "reconciler-saved-plan", "saved_format": 1, "node": "mx1"}))
    with pytest.raises(UserError, match="not a complete saved plan"):
        read_saved(str(broken))
