"""The lease keeper (reconciler.coord.lease) against three real etcd 3.4 members in namespaces.

What automatic failover will rely on: the keeper's local deadline is never later than the moment
the majority deletes the leader key (cut off from both other members, whichever member is etcd's
leader); a hung agent (no heartbeat) or a stopped keeper loses the lease, and the keeper never
revokes it on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.coord.etcd import EtcdClient, EtcdError
from reconciler.coord.lease import Keeper, LeaseState, boottime, heartbeat_age, read_state, write_heartbeat
from tests.conftest import need_etcd
from tests.etcd_cluster import EtcdCluster, etcd_cluster

TTL = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    need_etcd()
    with etcd_cluster(tmp_path_factory.mktemp("etcd-lease")) as c:
        yield c


def test_state_round_trips_and_deadline_is_send_time_plus_ttl() -> None:
    s = LeaseState(lease=0x1234, ttl=30, last_ok_sent=100.0, renewals=3)
    back = LeaseState.from_json(s.to_json())
    assert back == s and back.deadline == 130.0
    assert LeaseState(ttl=30).deadline is None
    with pytest.raises(ValueError):
        LeaseState.from_json('{"format": 99}')


def test_heartbeat_age(tmp_path: Path) -> None:
    hb = str(tmp_path / "hb")
    assert heartbeat_age(hb, 10.0) is None
    write_heartbeat(hb, 7.5)
    assert heartbeat_age(hb, 10.0) == pytest.approx(2.5)
    Path(hb).write_text("garbage")
    assert heartbeat_age(hb, 10.0) is None


def test_local_deadline_is_never_after_the_servers_expiry(cluster: EtcdCluster) -> None:
    """Renew from mx1's namespace; then cut mx1 from both other members.  The majority deletes the
    key only after mx1's local deadline (send time of the last successful keepalive + TTL)."""
    key = f"/lease/{time.monotonic_ns()}"
    keeper = Keeper(cluster.client(timeout=0.5), TTL)
    observer = cluster.client("mx2", "wit", timeout=1.0)

    def renew_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            keeper.renew()
            time.sleep(0.3)

    cluster.run("mx1", keeper.grant)
    lease = keeper.state.lease
    assert lease is not None and keeper.state.deadline is not None
    cluster.run("mx1", keeper.client.put, key, "mx1", lease)
    cluster.run("mx1", renew_for, 2.0)
    assert keeper.state.renewals >= 3 and keeper.state.failures == 0
    server_left = cluster.run("mx2", observer.time_to_live, lease)
    assert server_left is not None and boottime() + server_left >= keeper.state.deadline - 1.0  # TTL in whole seconds

    leader = cluster.run("mx2", observer.status).get("leader")
    cluster.cut("mx1", "mx2")
    cluster.cut("mx1", "wit")
    try:
        cut_at = boottime()
        gone_at = None
        while gone_at is None:
            cluster.run("mx1", keeper.renew)  # fails from here on (maybe after ~1.7 s if mx1 led)
            try:
                if cluster.run("wit", observer.get, key) is None:
                    gone_at = boottime()
            except EtcdError:
                pass  # an election on the majority side: unknown, not gone
            assert boottime() - cut_at < TTL + 10, "the majority never deleted the key"
            time.sleep(0.1)
        deadline = keeper.state.deadline
        assert deadline is not None
        print(f"etcd leader {leader}; last successful keepalive sent {keeper.state.last_ok_sent - cut_at:+.2f} s "
              f"after the cut; local deadline {deadline - cut_at:.2f} s, key deleted {gone_at - cut_at:.2f} s "
              f"(margin {gone_at - deadline:.2f} s)")
        assert gone_at >= deadline
    finally:
        cluster.heal("mx1", "mx2")
        cluster.heal("mx1", "wit")
    cluster.wait_healthy()
    assert cluster.run("mx1", keeper.client.keepalive, lease) is None  # gone for mx1 too


def _start_keeper(cluster: EtcdCluster, tmp: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    hb, state = str(tmp / "heartbeat"), str(tmp / "lease.json")
    argv = ["ip", "netns", "exec", cluster.members["mx1"].ns, sys.executable, "-m", "reconciler.coord.lease",
            "--ttl", str(TTL), "--interval", "0.3", "--timeout", "0.5", "--heartbeat", hb,
            "--max-heartbeat-age", "1.0", "--state", state]
    for ep in cluster.endpoints:
        argv += ["--endpoint", ep]
    write_heartbeat(hb)
    proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    return proc, hb, state


def _wait_state(state: str, ok: object, timeout: float = 15.0) -> LeaseState:
    t0 = time.monotonic()
    while True:
        s = read_state(state)
        if s is not None and ok(s):  # type: ignore[operator]
            return s
        assert time.monotonic() - t0 < timeout, f"lease state never as expected: {s}"
        time.sleep(0.1)


def _key_gone(cluster: EtcdCluster, key: str, within: float) -> float:
    """Seconds until the majority no longer has `key` (bound to the lease); polled at 10 Hz."""
    observer = cluster.client("mx2", "wit", timeout=1.0)
    t0 = time.monotonic()
    while True:
        try:
            if cluster.run("mx2", observer.get, key) is None:
                return time.monotonic() - t0
        except EtcdError:
            pass
        assert time.monotonic() - t0 < within, f"{key} still there after {within} s"
        time.sleep(0.1)


@pytest.mark.parametrize("hang", ["agent", "keeper"])
def test_a_hung_agent_or_keeper_loses_the_lease(cluster: EtcdCluster, tmp_path: Path, hang: str) -> None:
    """The keeper process renews well past the TTL while the agent's heartbeat is fresh; when the
    heartbeat stops (a hung agent) or the keeper itself is stopped, the lease runs out on the
    server, never revoked early: it lives at least until the keeper's local deadline."""
    proc, hb, state = _start_keeper(cluster, tmp_path)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < TTL + 1.5:  # the agent is alive: beyond one TTL
            write_heartbeat(hb)
            time.sleep(0.2)
        s = _wait_state(state, lambda s: s.lease is not None and s.renewals >= 5)
        assert s.lease is not None
        key = f"/keeper/{hang}"
        cluster.run("mx2", cluster.client("mx2").put, key, "mx1", s.lease)
        if hang == "agent":
            pass  # no more heartbeats
        else:
            write_heartbeat(hb)
            os.killpg(proc.pid, signal.SIGSTOP)
        stopped = boottime()
        took = _key_gone(cluster, key, TTL + 5)
        gone_at = boottime()
        if hang == "agent":
            last = _wait_state(state, lambda s: bool(s.paused_for))
            assert "heartbeat" in last.paused_for
        else:
            last = s
        deadline = (read_state(state) or last).deadline
        assert deadline is not None and gone_at >= deadline - 0.3, (gone_at, deadline)
        assert took <= TTL + 2.0 and gone_at - stopped >= 0
    finally:
        try:
            os.killpg(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait(timeout=20)


def test_keeper_holds_while_the_agent_runs(cluster: EtcdCluster, tmp_path: Path) -> None:
    proc, hb, state = _start_keeper(cluster, tmp_path)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2 * TTL:
            write_heartbeat(hb)
            time.sleep(0.2)
        s = _wait_state(state, lambda s: s.lease is not None)
        assert s.lease is not None and not s.paused_for and s.failures == 0
        left = cluster.run("wit", EtcdClient([cluster.members["wit"].url]).time_to_live, s.lease)
        assert left is not None and left >= 1  # alive after two TTLs
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_an_adopted_lease_keeps_the_previous_keepers_deadline_only_within_the_same_boot(tmp_path: Path) -> None:
    """A restarted agent's keeper adopts the claim's lease: it starts from the previous keeper's
    send time (a first failed keepalive then does not read as "never renewed"), but only for that
    lease, from this boot, and not from the future (a reading of another boot)."""
    from reconciler.coord.lease import adopted, boot_id, write_state

    path = str(tmp_path / "lease.json")
    write_state(path, LeaseState(lease=7, ttl=10, last_ok_sent=100.0, renewals=3, failures=2, paused_for="x"))
    got = adopted(path, 7, 10, now=101.0)
    assert (got.lease, got.last_ok_sent, got.failures, got.paused_for, got.boot_id) == (7, 100.0, 0, "", boot_id())
    assert adopted(path, 8, 10, now=101.0).last_ok_sent is None  # another lease
    assert adopted(path, 7, 10, now=50.0).last_ok_sent is None  # a reading from the future: another boot
    other = LeaseState(lease=7, ttl=10, last_ok_sent=100.0, boot_id="another-boot")
    write_state(path, other)
    assert adopted(path, 7, 10, now=101.0).last_ok_sent is None
    assert adopted(str(tmp_path / "none.json"), 7, 10, now=1.0) == LeaseState(lease=7, ttl=10)
