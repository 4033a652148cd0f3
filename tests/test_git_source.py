"""Git-driven changes on real repositories: the spec as committed at HEAD, uncommitted
edits ignored (and reported), new commits picked up within a second, revisions recorded,
and `plan --rev` on a past commit with saved snapshots."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from reconciler.agent.run import Agent
from reconciler.agent.source import POLL_S, GitSource, SourceError
from reconciler.agent.state import read_state
from tests.gitrepo import bare_observe, commit_file, git, init_repo, minimal_spec, running, write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX = os.path.join(ROOT, "specs", "examples")


@pytest.fixture
def repo(tmp_path):
    r = str(tmp_path / "repo")
    init_repo(r)
    return r


def test_reads_head_ignores_uncommitted_edits_and_reports_them(repo):
    first = commit_file(repo, "cluster.yaml", minimal_spec("mx1"))
    src = GitSource(repo, "cluster.yaml")
    assert not src.uncommitted()
    write(os.path.join(repo, "cluster.yaml"), minimal_spec("mx2"))
    loaded = src.load()
    assert loaded.revision == first and loaded.model.primary == "mx1"
    assert src.uncommitted()
    assert not src.changed()


def test_a_new_commit_is_seen_by_the_poll_alone(repo):
    commit_file(repo, "cluster.yaml", minimal_spec("mx1"))
    src = GitSource(repo, "cluster.yaml")
    src.load()
    second = commit_file(repo, "cluster.yaml", minimal_spec("mx2"))
    time.sleep(POLL_S)
    assert src.changed()  # no watch event: the rate-limited rev-parse finds it
    assert src.load().revision == second


def test_bad_rev_and_missing_file_are_one_line_errors(repo):
    commit_file(repo, "cluster.yaml", minimal_spec())
    with pytest.raises(SourceError, match="no commit 'nope'"):
        GitSource(repo, "cluster.yaml", "nope").load()
    with pytest.raises(SourceError, match="other.yaml is not committed"):
        GitSource(repo, "other.yaml").load()
    with pytest.raises(SourceError, match="inside"):
        GitSource(repo, "../x.yaml")


def test_agent_follows_head_within_a_second_and_records_revisions(repo, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reconciler")
    first = commit_file(repo, "cluster.yaml", minimal_spec("mx1"), "first")
    state = str(tmp_path / "state")
    agent = Agent(GitSource(repo, "cluster.yaml"), "mx1", serve=False, state_dir=state, observe=bare_observe)
    with running(agent):
        _wait(lambda: (read_state(state, "mx1") or agent.revs.rev).applied == first, 5, "first applied")
        assert agent.watching.wait(5)
        write(os.path.join(repo, "cluster.yaml"), minimal_spec("mx2"))  # not committed
        _wait(lambda: agent.revs.rev.uncommitted, 3, "the uncommitted edit noticed")
        assert agent.current.revision == first and agent.spec.model.primary == "mx1"
        assert "uncommitted edits" in caplog.text
        git(repo, "add", "cluster.yaml")
        t0 = time.monotonic()
        git(repo, "commit", "-q", "-m", "second")
        second = git(repo, "rev-parse", "HEAD")
        _wait(lambda: agent.current.revision == second, 3, "the new commit picked up")
        took = time.monotonic() - t0
        _wait(lambda: read_state(state, "mx1").applied == second, 3, "second applied")
    assert took < 1.0, f"new commit picked up after {took:.2f}s"
    st = read_state(state, "mx1")
    assert (st.applied, st.attempted, st.current, st.uncommitted) == (second, second, second, False)
    assert agent.spec.model.primary == "mx2"


def test_an_invalid_commit_is_attempted_but_not_applied(repo, tmp_path):
    good = commit_file(repo, "cluster.yaml", minimal_spec("mx1"))
    state = str(tmp_path / "state")
    agent = Agent(GitSource(repo, "cluster.yaml"), "mx1", serve=False, state_dir=state, observe=bare_observe)
    with running(agent):
        _wait(lambda: agent.revs.rev.applied == good, 5, "applied")
        bad = commit_file(repo, "cluster.yaml", minimal_spec("mx9"))
        _wait(lambda: agent.revs.rev.attempted == bad, 3, "the bad commit attempted")
    st = read_state(state, "mx1")
    assert st.applied == good and st.current == good and st.attempted == bad
    assert "primary: not one of the nodes" in st.attempted_error and f"@{bad[:12]}" in st.attempted_error


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reconciler", *argv], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_plan_rev_on_a_past_commit_with_saved_snapshots(repo):
    example = open(os.path.join(ROOT, "specs", "cluster.example.yaml")).read()
    old = commit_file(repo, "cluster.yaml", example, "mx1 primary")
    new = commit_file(repo, "cluster.yaml", example.replace("primary: mx1 ", "primary: mx2 "), "switch to mx2")
    snaps = ["--node", "mx1", "--observed", f"{EX}/converged/mx1.json", "--peer-observed", f"{EX}/converged/mx2.json"]
    past = _cli("plan", "--git", repo, "--path", "cluster.yaml", "--rev", "HEAD~1", *snaps)
    assert past.returncode == 0, past.stderr
    assert f"commit {old[:12]}" in past.stdout and "No changes" in past.stdout
    head = _cli("plan", "--git", repo, "--path", "cluster.yaml", *snaps)
    assert head.returncode == 2 and f"commit {new[:12]}" in head.stdout and "stop service greenarrow" in head.stdout
    by_sha = _cli("plan", "--git", repo, "--path", "cluster.yaml", "--rev", old[:10], "--json", *snaps)
    assert by_sha.returncode == 0 and json.loads(by_sha.stdout)["changes"] == []
    bad = _cli("plan", "--git", repo, "--path", "cluster.yaml", "--rev", "no-such-branch", *snaps)
    assert bad.returncode == 1 and "no commit 'no-such-branch'" in bad.stderr and "Traceback" not in bad.stderr
    both = _cli("plan", "x.yaml", "--git", repo, "--path", "cluster.yaml", *snaps)
    assert both.returncode == 1 and "not both" in both.stderr


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
