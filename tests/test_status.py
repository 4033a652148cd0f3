"""`reconciler status`'s revision lines: which revision each node applies and whether the two
agree on the roles (what the revision-agreement guard compares), without calling two copies
of a spec that differ only in per-node paths (the demo's case) a different revision."""

from __future__ import annotations

import os

from reconciler.agent.source import FileSource, stamp
from reconciler.agent.state import Revisions, short, state_path
from reconciler.cli.status_cmd import revision_lines
from reconciler.model import NodeObservation
from reconciler.spec.load import load_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = open(os.path.join(ROOT, "specs", "demo.yaml")).read()


def copy_for(tmp_path, node: str, primary: str = "mx2"):
    """`node`'s copy of the demo spec, as the demo writes it: per-node paths, the same roles."""
    path = tmp_path / node / "cluster.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(DEMO.replace("{node}", node).replace("primary: mx1", f"primary: {primary}"))
    return str(path)


def applying(node: str, spec) -> NodeObservation:
    """`node` as its agent serves it to the peer: stamped with the spec it applies."""
    return stamp(NodeObservation(node=node), spec)


def test_copies_differing_only_in_per_node_paths_agree_on_the_roles(tmp_path):
    mine, theirs = load_spec(copy_for(tmp_path, "mx1")), load_spec(copy_for(tmp_path, "mx2"))
    assert mine.digest != theirs.digest and mine.model.primary == theirs.model.primary == "mx2"
    state = state_path(str(tmp_path / "state"), "mx1")
    lines = revision_lines(FileSource(mine.path), mine, None, applying("mx2", theirs), state)
    text = "\n".join(lines)
    assert "DIFFERENT" not in text, text
    assert f"Peer mx2  applies sha256:{theirs.digest[:12]}; this node applies sha256:{mine.digest[:12]}" in text
    assert "Roles     the same on both nodes: primary=mx2 fenced=none; the two specs differ only outside the roles" in text
    assert f"Revision  not recorded: no agent has written {state}" in text and "--state-dir" in text
    assert "no agent state recorded" not in text


def test_different_roles_are_reported_with_both(tmp_path):
    mine, theirs = load_spec(copy_for(tmp_path, "mx1")), load_spec(copy_for(tmp_path, "mx2", primary="mx1"))
    text = "\n".join(revision_lines(FileSource(mine.path), mine, None, applying("mx2", theirs), "/nonexistent"))
    assert ("Roles     DIFFERENT: this node applies primary=mx2 fenced=none, peer mx2 applies primary=mx1 "
            "fenced=none; a role change waits until both apply the same roles") in text


def test_the_same_revision_and_the_agents_record(tmp_path):
    path = copy_for(tmp_path, "mx1")
    commit = "a" * 40
    mine = load_spec(path, open(path, "rb").read(), revision=commit)
    revs = Revisions(node="mx1", source=path, current=commit, attempted=commit, applied=commit,
                     attempted_at=1.0, applied_at=1.0)
    text = "\n".join(revision_lines(FileSource(path), mine, revs, applying("mx2", mine), "/nonexistent"))
    assert f"Peer mx2  applies the same revision as this node, {short(commit)}" in text
    assert "Roles     the same on both nodes: primary=mx2 fenced=none" in text and "outside the roles" not in text
    assert f"Revision  applied {commit[:12]} at " in text and "not recorded" not in text


def test_a_peer_that_reports_no_roles_and_an_unreadable_state_file(tmp_path):
    mine = load_spec(copy_for(tmp_path, "mx1"))
    peer = applying("mx2", mine).model_copy(update={"spec_roles": None})
    bad = tmp_path / "state-mx1.json"
    bad.write_text("not json")
    text = "\n".join(revision_lines(FileSource(mine.path), mine, None, peer, str(bad)))
    assert "Roles     unknown: peer mx2 does not report the roles it applies" in text
    assert f"Revision  not recorded: {bad} cannot be read as an agent's state file" in text


def test_an_unreachable_peer_gets_no_revision_lines(tmp_path):
    mine = load_spec(copy_for(tmp_path, "mx1"))
    lines = revision_lines(FileSource(mine.path), mine, None, None, "/nonexistent")
    assert not any(line.startswith(("Peer", "Roles")) for line in lines)
