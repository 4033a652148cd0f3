"""Integration: both agents follow the spec as committed in their own git checkout.  An
uncommitted edit changes nothing; a commit reaching one node only is picked up within a
second but the switchover waits, saying which revisions disagree, until the other node
has the same roles; then it happens."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from demo.cluster import NODES, PY, ROOT_DIR, VIP, TwoNode, in_ns, wait_for
from tests.conftest import need_netns, need_postgres
from tests.gitrepo import git, init_repo
from tests.test_integration import assert_primary, holds

pytestmark = pytest.mark.slow


class GitTwoNode(TwoNode):
    """TwoNode whose agents run `--git` on a repository per node (root/NODE/repo)."""

    def repo(self, node: str) -> str:
        return os.path.join(self.root, node, "repo")

    def state_dir(self, node: str) -> str:
        return os.path.join(self.root, node, "state")

    def spec_path(self, node: str) -> str:
        return os.path.join(self.repo(node), "cluster.yaml")

    def write_spec(self, node: str, primary: str, fenced: tuple[str, ...] = ()) -> None:
        if not os.path.isdir(self.repo(node)):
            init_repo(self.repo(node))
        super().write_spec(node, primary, fenced)

    def commit(self, node: str, message: str) -> str:
        git(self.repo(node), "add", "cluster.yaml")
        git(self.repo(node), "commit", "-q", "-m", message)
        return git(self.repo(node), "rev-parse", "HEAD")

    def start_agent(self, node: str) -> None:
        log = open(os.path.join(self.root, node, "agent.log"), "a")
        self.agents[node] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[node], PY, "-m", "reconciler", "run", "--git", self.repo(node),
             "--path", "cluster.yaml", "--node", node, "--state-dir", self.state_dir(node)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT_DIR, start_new_session=True)

    def state(self, node: str) -> dict:
        try:
            with open(os.path.join(self.state_dir(node), f"state-{node}.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def git_cli(self, node: str, cmd: str) -> subprocess.CompletedProcess:
        extra = ("--state-dir", self.state_dir(node)) if cmd == "status" else ()
        return in_ns(self.ns[node], PY, "-m", "reconciler", cmd, "--git", self.repo(node), "--path", "cluster.yaml",
                     "--node", node, *extra, timeout=60, check=False)


@pytest.fixture
def gcluster():
    need_netns()
    need_postgres()
    c = GitTwoNode(n_ips=4)
    try:
        c.build("mx1")
        for n in NODES:
            c.commit(n, "mx1 is primary")
            c.start_agent(n)
        yield c
    finally:
        for n in NODES:
            path = os.path.join(c.root, n, "agent.log")
            print(f"----- {n} agent log -----\n" + (open(path).read()[-6000:] if os.path.exists(path) else ""))
        c.close()


def test_switchover_waits_for_both_revisions_then_happens(gcluster):
    c = gcluster
    c.wait_converged(120)
    wait_for(lambda: all(c.state(n).get("applied") for n in NODES), 30, "both agents converged")
    first = {n: c.state(n)["applied"] for n in NODES}
    c.write_spec("mx1", "mx2")  # edited, not committed: ignored
    wait_for(lambda: "uncommitted edits" in c.agent_log("mx1"), 10, "the uncommitted edit reported")
    st = c.git_cli("mx1", "status")
    assert "uncommitted edits to cluster.yaml are ignored" in st.stdout, st.stdout
    assert holds(c, "mx1", VIP) and c.state("mx1")["current"] == first["mx1"]

    t0 = time.monotonic()
    new1 = c.commit("mx1", "switch to mx2")  # only mx1 has it: mx2 still says mx1 is primary
    wait_for(lambda: c.state("mx1").get("current") == new1, 5, "mx1 picking up its new commit", every=0.01)
    picked = time.monotonic() - t0
    assert picked < 1.5, f"the new commit was picked up after {picked:.2f}s"
    wait_for(lambda: "revisions disagree" in c.agent_log("mx1"), 10, "mx1 waiting on the revisions")
    time.sleep(3)
    assert holds(c, "mx1", VIP) and c.status_json("mx1")["postgres"]["in_recovery"] is False, "acted on one revision"
    assert c.status_json("mx2")["postgres"]["in_recovery"] is True
    p = c.git_cli("mx1", "plan")
    assert p.returncode == 2 and "revisions disagree" in p.stdout
    assert new1[:12] in p.stdout and first["mx2"][:12] in p.stdout, p.stdout
    assert "primary=mx2" in p.stdout and "primary=mx1" in p.stdout
    st = c.git_cli("mx1", "status").stdout
    assert "Roles     DIFFERENT: this node applies primary=mx2 fenced=none, peer mx2 applies primary=mx1" in st, st
    assert f"Peer mx2  applies {first['mx2'][:12]}; this node applies {new1[:12]}" in st, st

    c.write_spec("mx2", "mx2")
    new2 = c.commit("mx2", "switch to mx2")  # now both apply primary=mx2
    wait_for(lambda: holds(c, "mx2", VIP) and c.status_json("mx2")["postgres"]["in_recovery"] is False, 90,
             "mx2 promoted once both agree")
    c.wait_converged(90)
    assert_primary(c, "mx2")
    wait_for(lambda: c.state("mx2").get("applied") == new2 and c.state("mx1").get("applied") == new1, 30,
             "both record the new revision as applied")
    print(f"\nnew commit picked up by the agent {picked:.3f}s after `git commit`")
