"""reconciler.coord.etcd against three real etcd 3.4 members in network namespaces.

What the failover code relies on: linearizable reads that fail (never answer stale) on a member
cut off from the quorum; a create-if-absent txn that reports the holder when it loses; a lease
whose keys go with it and whose keepalive reports its loss; a request that reached a silent
member is "unknown", never sent twice.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from reconciler.coord.etcd import (
    EtcdClient,
    EtcdError,
    cmp_create_revision,
    op_put,
    op_range,
    prefix_end,
)
from tests.conftest import need_etcd
from tests.etcd_cluster import EtcdCluster, etcd_cluster

T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    need_etcd()
    with etcd_cluster(tmp_path_factory.mktemp("etcd")) as c:
        yield c


def test_prefix_end_follows_etcds_convention() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert prefix_end(b"") == b"\0"


def test_put_get_delete_and_prefix(cluster: EtcdCluster) -> None:
    cl = cluster.client()

    def go() -> None:
        rev = cl.put("/t1/a", "eins")
        assert rev > 0
        cl.put("/t1/b", "zwei ✓")
        cl.put("/t10", "outside the prefix")
        kv = cl.get("/t1/b")
        assert kv is not None and kv.value == "zwei ✓" and kv.version == 1 and kv.create_revision > 0
        assert [k.key for k in cl.get_prefix("/t1/")] == ["/t1/a", "/t1/b"]
        assert cl.delete("/t1/a") == 1
        assert cl.get("/t1/a") is None
        assert cl.delete("/t1/a") == 0

    cluster.run("mx1", go)


def test_create_if_absent_reports_the_holder_when_it_loses(cluster: EtcdCluster) -> None:
    cl = cluster.client()

    def go() -> None:
        first = cl.txn([cmp_create_revision("/t2/leader", 0)], [op_put("/t2/leader", "mx1")], [op_range("/t2/leader")])
        assert first.succeeded and first.ranges == ()
        second = cl.txn([cmp_create_revision("/t2/leader", 0)], [op_put("/t2/leader", "mx2")], [op_range("/t2/leader")])
        assert not second.succeeded
        assert [kv.value for kv in second.ranges[0]] == ["mx1"]
        assert second.revision >= first.revision

    cluster.run("mx2", go)


def test_a_lease_carries_its_keys_and_its_loss_is_reported(cluster: EtcdCluster) -> None:
    cl = cluster.client()

    def go() -> None:
        lease, ttl = cl.grant(5)
        assert lease > 0 and ttl == 5
        cl.put("/t3/leader", "mx1", lease=lease)
        kv = cl.get("/t3/leader")
        assert kv is not None and kv.lease == lease
        assert cl.keepalive(lease) == 5
        left = cl.time_to_live(lease)
        assert left is not None and 0 < left <= 5
        cl.revoke(lease)
        assert cl.get("/t3/leader") is None  # revoking deletes the keys bound to it
        assert cl.keepalive(lease) is None  # gone: the reply has no TTL
        assert cl.time_to_live(lease) is None
        cl.revoke(lease)  # already gone: not an error

        short, _ = cl.grant(2)
        cl.put("/t3/short", "x", lease=short)
        t0 = time.monotonic()
        while cl.get("/t3/short") is not None:
            assert time.monotonic() - t0 < 10, "a 2 s lease's key outlived 10 s"
            time.sleep(0.2)
        assert cl.keepalive(short) is None

    cluster.run("mx1", go)


def test_a_member_cut_off_from_the_quorum_answers_nothing(cluster: EtcdCluster) -> None:
    """A linearizable read through the isolated member fails (unknown); it never returns the value
    the majority has since changed."""
    local = cluster.client("mx1", timeout=2.0)
    everyone = cluster.client()
    cluster.run("mx2", everyone.put, "/t4/k", "before")
    cluster.cut("mx1", "mx2")
    cluster.cut("mx1", "wit")
    try:
        # the majority goes on, once it has a leader (if mx1 led, an election first: "unknown" meanwhile)
        _eventually(lambda: cluster.run("mx2", everyone.put, "/t4/k", "after"))
        assert _eventually(lambda: cluster.run("wit", everyone.get, "/t4/k")).value == "after"  # type: ignore[union-attr]
        t0 = time.monotonic()
        with pytest.raises(EtcdError):
            cluster.run("mx1", local.get, "/t4/k")
        assert time.monotonic() - t0 < 2.5  # bounded by the client's timeout
        with pytest.raises(EtcdError):  # every endpoint tried, only the local one reachable
            cluster.run("mx1", cluster.client(timeout=2.0).get, "/t4/k")
    finally:
        cluster.heal("mx1", "mx2")
        cluster.heal("mx1", "wit")
    cluster.wait_healthy()
    assert cluster.run("mx1", local.get, "/t4/k").value == "after"  # type: ignore[union-attr]


def _eventually(fn: Callable[[], T], within: float = 15.0) -> T:
    t0 = time.monotonic()
    while True:
        try:
            return fn()
        except EtcdError:
            if time.monotonic() - t0 > within:
                raise
            time.sleep(0.3)


def test_a_stopped_member_is_passed_over(cluster: EtcdCluster) -> None:
    cl = cluster.client("wit", "mx2", "mx1", timeout=3.0)  # the first endpoint will be down
    cluster.stop("wit")
    try:
        # never sent to wit: the next member (if wit led etcd, after the others elected a leader)
        assert _eventually(lambda: cluster.run("mx1", cl.put, "/t5/k", "v")) > 0
        assert cluster.run("mx1", cl.get, "/t5/k").value == "v"  # type: ignore[union-attr]
    finally:
        cluster.start("wit")
    cluster.wait_healthy()


def test_a_write_sent_to_a_silent_member_is_unknown_not_resent(cluster: EtcdCluster) -> None:
    """A paused member accepts the connection and never answers: a put may have been applied,
    so the client must not send it to another member; a read may go on to the next."""
    cl = cluster.client("mx2", "mx1", timeout=1.5)
    cluster.pause("mx2")
    try:
        with pytest.raises(EtcdError, match="may or may not have been applied"):
            cluster.run("mx1", cl.put, "/t6/k", "v")
        # the read goes on to mx1 (if mx2 led etcd, once the others elected a leader)
        assert _eventually(lambda: cluster.run("mx1", cl.get, "/t6/k")) is None
    finally:
        cluster.resume("mx2")
    cluster.wait_healthy()


def test_an_endpoint_that_is_not_a_url_is_refused() -> None:
    with pytest.raises(ValueError, match="expected http"):
        EtcdClient(["10.0.0.1:2379"])
    with pytest.raises(ValueError):
        EtcdClient([])


def test_cluster_fixture_cleans_up(tmp_path: Path) -> None:
    need_etcd()
    with etcd_cluster(tmp_path) as c:
        names = [m.ns for m in c.members.values()] + [c.bridge_ns]
        pids = [m.proc.pid for m in c.members.values() if m.proc]
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    assert not [n for n in names if n in left]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()


WITNESS_SPEC = """\
cluster: mail
nodes:
  mx1: {address: 10.77.0.1}
  mx2: {address: 10.77.0.2}
primary: mx1
failover:
  witness: {name: wit, address: 10.77.0.3}
  etcd: {prefix: /reconciler/mail}
"""


def _etcd_config(spec: Path, member: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", "etcd-config", str(spec), member],
                          capture_output=True, text=True, timeout=60)


def test_etcd_config_prints_a_cluster_that_forms(tmp_path: Path) -> None:
    """The three printed /etc/default/etcd files, given to real etcd as its environment (as
    Debian's etcd.service does), form one healthy cluster that the agents' client can use."""
    need_etcd()
    spec = tmp_path / "cluster.yaml"
    spec.write_text(WITNESS_SPEC)
    configs: dict[str, dict[str, str]] = {}
    for member in ("mx1", "mx2", "wit"):
        r = _etcd_config(spec, member)
        assert r.returncode == 0, r.stderr
        lines = [ln for ln in r.stdout.splitlines() if ln and not ln.startswith("#")]
        configs[member] = dict(ln.split("=", 1) for ln in lines)
        assert configs[member]["ETCD_NAME"] == member
        assert configs[member]["ETCD_PRE_VOTE"] == "true"
    assert configs["mx1"]["ETCD_INITIAL_CLUSTER"] == ("mx1=http://10.77.0.1:2380,mx2=http://10.77.0.2:2380,"
                                                      "wit=http://10.77.0.3:2380")
    assert configs["mx1"]["ETCD_LISTEN_CLIENT_URLS"] == "http://10.77.0.1:2379,http://127.0.0.1:2379"
    with etcd_cluster(tmp_path, config=configs.__getitem__) as c:
        cl = c.client()
        assert c.run("wit", cl.put, "/reconciler/mail/probe", "ok") > 0
        assert c.run("mx2", EtcdClient(["http://127.0.0.1:2379"]).get, "/reconciler/mail/probe").value == "ok"  # type: ignore[union-attr]
        members = c.run("mx1", cl.status)
        assert members.get("leader")


@pytest.mark.parametrize("text, member, reason", [
    (WITNESS_SPEC, "mx3", "'mx3' is not an etcd member of this spec (members: mx1, mx2, wit)"),
    (WITNESS_SPEC.split("failover:")[0], "mx1", "failover.witness is not set"),
])
def test_etcd_config_refuses_in_one_line(tmp_path: Path, text: str, member: str, reason: str) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(text)
    r = _etcd_config(spec, member)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and reason in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_status_shows_each_member_and_the_leader_key(cluster: EtcdCluster, tmp_path: Path) -> None:
    from reconciler.cli.coord_status import coordination_lines
    from reconciler.coord.election import Election
    from reconciler.spec.load import load_spec

    path = tmp_path / "cluster.yaml"
    path.write_text(WITNESS_SPEC.replace("/reconciler/mail", f"/status/{time.monotonic_ns()}"))
    spec = load_spec(str(path)).model
    lines = cluster.run("mx1", coordination_lines, spec)
    members = [ln for ln in lines if ln.startswith("etcd ")]
    assert len(members) == 3 and all(": up, " in ln for ln in members), lines
    assert sum("is the raft leader" in ln for ln in members) == 1, lines
    assert lines[-1].startswith("Leader    held by nobody; last epoch 0; no failover candidate"), lines
    el = Election(cluster.client(), spec.etcd_prefix())
    lease, _ = cluster.run("mx2", el.client.grant, 30)
    assert cluster.run("mx2", el.acquire, "mx2", lease, 0)
    cluster.stop("wit")
    try:
        t0 = time.monotonic()
        while True:  # if wit led etcd, the others elect a leader first: "unknown" meanwhile, never wrong
            lines = cluster.run("mx1", coordination_lines, spec)
            if not lines[-1].startswith("Leader    unknown") or time.monotonic() - t0 > 15:
                break
            time.sleep(0.5)
    finally:
        cluster.start("wit")
    assert any(ln.startswith("etcd      http://10.77.0.3:2379: DOWN or unreachable") for ln in lines), lines
    assert lines[-1].startswith(f"Leader    held by mx2 at epoch 1 (lease {lease:x}); last epoch 1"), lines
    cluster.run("mx2", el.client.revoke, lease)
    cluster.wait_healthy()


def test_status_refuses_a_password_file_others_can_read(tmp_path: Path) -> None:
    from reconciler.cli.coord_status import coordination_lines
    from reconciler.spec.load import load_spec

    need_etcd()
    pw = tmp_path / "etcd.pw"
    pw.write_text("secret-value\n")
    pw.chmod(0o644)
    path = tmp_path / "cluster.yaml"
    path.write_text(WITNESS_SPEC.replace("  etcd: {prefix: /reconciler/mail}",
                                         f"  etcd: {{prefix: /p, username: agent, password_file: {pw}}}"))
    lines = coordination_lines(load_spec(str(path)).model)
    assert lines[-1].startswith("etcd      not queried: ") and "etcd password file" in lines[-1], lines
    assert "secret-value" not in "\n".join(lines)
