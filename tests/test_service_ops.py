"""Running as a service: sd_notify on a real socket (in-process and through `reconciler run`),
Prometheus metrics scraped over real HTTP and parsed, and the systemd unit file."""

from __future__ import annotations

import http.client
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.agent.loop import Acted, Converged, Retrying
from reconciler.agent.metrics import Metrics
from reconciler.agent.run import Agent
from reconciler.agent.sdnotify import Notifier
from reconciler.agent.source import GitSource
from reconciler.execute.dispatch import Result
from reconciler.model import int_to_lsn, lsn_to_int
from reconciler.peer import PeerServer
from reconciler.plan.actions import Action, Kind, Plan
from tests.conftest import need
from tests.gitrepo import bare_observe, commit_file, free_port, init_repo, minimal_spec, running, secret_file
from tests.test_planner_cases import SPEC, snap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- sd_notify ---------------------------------------------------------------------------
def _listen(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(0.2)
    return s


def _drain(s: socket.socket, until, timeout: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(got):
        try:
            got.append(s.recv(4096).decode())
        except TimeoutError:
            pass
    return got


def test_sd_notify_in_order_ready_then_status_and_watchdog_then_stopping(tmp_path):
    path = str(tmp_path / "notify.sock")
    repo = str(tmp_path / "repo")
    init_repo(repo)
    rev = commit_file(repo, "cluster.yaml", minimal_spec())
    with _listen(path) as s:
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
        assert n.interval == pytest.approx(0.1)
        agent = Agent(GitSource(repo, "cluster.yaml"), "mx1", serve=False, observe=bare_observe, notifier=n)
        with running(agent):
            got = _drain(s, lambda g: sum(m == "WATCHDOG=1" for m in g) >= 3, 5)
        got += _drain(s, lambda g: "STOPPING=1" in g, 2)
    assert got[0].startswith("READY=1\nSTATUS=observed"), got[:3]
    assert f"STATUS=converged at {rev[:12]}" in got
    assert sum(m == "WATCHDOG=1" for m in got) >= 3
    assert got[-1] == "STOPPING=1" and sum(m.startswith("READY=1") for m in got) == 1


def test_without_notify_socket_nothing_is_sent():
    n = Notifier({})
    assert n.address is None and n.interval is None and not n.send("READY=1")


def test_reconciler_run_talks_to_systemd_on_an_abstract_socket(tmp_path):
    name = f"reconciler-test-{secrets.token_hex(6)}"
    repo = str(tmp_path / "repo")
    init_repo(repo)
    rev = commit_file(repo, "cluster.yaml", minimal_spec(port=free_port(), secret=secret_file(str(tmp_path))))
    env = {**os.environ, "NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "300000", "JOURNAL_STREAM": "8:1"}
    env.pop("WATCHDOG_PID", None)
    with _listen("\0" + name) as s:
        p = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--git", repo, "--path", "cluster.yaml",
                              "--node", "mx1", "--state-dir", str(tmp_path / "state")], cwd=ROOT, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            got = _drain(s, lambda g: "WATCHDOG=1" in g and any(m.startswith("STATUS=converged") for m in g), 20)
            p.send_signal(signal.SIGTERM)
            got += _drain(s, lambda g: "STOPPING=1" in g, 10)
            assert p.wait(20) == 0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        log = p.stdout.read()
    assert got[0].startswith("READY=1"), got
    assert f"STATUS=converged at {rev[:12]}" in got and "WATCHDOG=1" in got and got[-1] == "STOPPING=1"
    assert not re.search(r"^\d\d:\d\d:\d\d", log, re.M), "timestamps in journald lines"


# ---- metrics -----------------------------------------------------------------------------
def _scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read().decode()
    finally:
        c.close()


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_carry_the_cycle_state_and_parse():
    own, peer = snap("converged", "mx1"), snap("converged", "mx2")
    behind = int_to_lsn(lsn_to_int(own.postgres.current_lsn) - 4096)
    peer = peer.model_copy(update={"postgres": peer.postgres.model_copy(update={"receive_lsn": behind})})
    m = Metrics()
    promote = Action(Kind.PG_PROMOTE, "postgres", "test")
    m.record(SPEC, Acted(plan=Plan("mx1", (promote,)), own=own, action=promote, result=Result(True), seconds=0.2),
             peer, 0.3, {})
    m.record(SPEC, Retrying(plan=Plan("mx1", (promote,)), own=own, action=promote, reason="x", attempt=1,
                            result=Result(False, "x"), seconds=0.1), peer, 0.2, {})
    m.record(SPEC, Converged(plan=Plan("mx1"), own=own), peer, 0.05, {"applied": "a" * 40, "attempted": "b" * 40})
    with PeerServer("127.0.0.1", 0, b"s" * 32, lambda: own, m.exposition) as srv:
        status, ctype, body = _scrape(srv.port)
    assert status == 200 and ctype.startswith("text/plain")
    v = _samples(body)
    assert v[("reconciler_converged", ())] == 1 and v[("reconciler_blocked_actions", ())] == 0
    assert v[("reconciler_actions_applied_total", (("kind", "pg_promote"),))] == 1
    assert v[("reconciler_actions_failed_total", (("kind", "pg_promote"),))] == 1
    assert v[("reconciler_reconcile_duration_seconds_count", ())] == 3
    assert v[("reconciler_reconcile_duration_seconds_sum", ())] == pytest.approx(0.55)
    assert v[("reconciler_drbd_primary", (("resource", "r0"),))] == 1
    assert v[("reconciler_drbd_connected", (("resource", "r0"),))] == 1
    assert v[("reconciler_postgres_primary", ())] == 1 and v[("reconciler_postgres_up", ())] == 1
    assert v[("reconciler_postgres_timeline", ())] == own.postgres.timeline
    assert v[("reconciler_postgres_replication_lag_bytes", ())] == 4096
    for iface, want in SPEC.addresses.items():
        assert v[("reconciler_floating_ips_held", (("interface", iface),))] == len(want)
        assert v[("reconciler_floating_ips_desired", (("interface", iface),))] == len(want)
    assert v[("reconciler_applied_revision", (("revision", "a" * 40),))] == 1
    assert v[("reconciler_attempted_revision", (("revision", "b" * 40),))] == 1


def test_the_agent_serves_metrics_only_when_the_spec_says_so(tmp_path):
    repo = str(tmp_path / "repo")
    init_repo(repo)
    secret = secret_file(str(tmp_path))
    for enabled in (True, False):
        port = free_port()
        rev = commit_file(repo, "cluster.yaml", minimal_spec(port=port, secret=secret, metrics=enabled))
        agent = Agent(GitSource(repo, "cluster.yaml"), "mx1", observe=bare_observe)
        with running(agent):
            deadline = time.monotonic() + 10
            while agent.revs.rev.applied != rev and time.monotonic() < deadline:
                time.sleep(0.02)
            status, _, body = _scrape(port)
        if enabled:
            v = _samples(body)
            assert status == 200 and v[("reconciler_converged", ())] == 1
            assert v[("reconciler_applied_revision", (("revision", rev),))] == 1
            assert v[("reconciler_peer_reachable", ())] == 0
        else:
            assert status == 404


# ---- the unit file -------------------------------------------------------------------------
def test_systemd_unit_verifies_and_never_kills_postgres(tmp_path):
    need(shutil.which("systemd-analyze") is not None, "needs systemd-analyze")
    text = open(os.path.join(ROOT, "packaging", "reconciler.service")).read()
    for line in ("Type=notify", "KillMode=process", "Restart=on-failure", "After=network-online.target",
                 "Wants=network-online.target", "StartLimitIntervalSec=", "StartLimitBurst=", "WatchdogSec="):
        assert re.search(rf"^{re.escape(line)}", text, re.M), line
    unit = tmp_path / "reconciler.service"
    unit.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", text, flags=re.M))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [x for x in (r.stdout + r.stderr).splitlines() if str(unit) in x]
    assert r.returncode == 0 and not problems, problems
