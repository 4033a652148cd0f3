"""Integration tier: two network namespaces, a real PostgreSQL 15 per node, the real agent
in each.  Each scenario asserts the end state from the real systems."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from demo.cluster import NODES, PY, ROOT_DIR, VIP, WRITER, TwoNode, in_ns, wait_for
from tests.conftest import need_netns, need_postgres

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster():
    need_netns()
    need_postgres()
    c = TwoNode(n_ips=4)
    try:
        c.build("mx1")
        for n in NODES:
            c.start_agent(n)
        yield c
    finally:
        for n in NODES:  # shown by pytest when the test failed
            print(f"----- {n} agent log -----\n" + c.agent_log(n)[-6000:] if os.path.exists(c.spec_path(n)) else "")
        c.close()


def holds(c: TwoNode, node: str, ip: str) -> bool:
    r = in_ns(c.ns[node], "ip", "-o", "addr", "show", "dev", "eth0")
    return f" {ip}/" in r.stdout


def assert_primary(c: TwoNode, primary: str) -> None:
    other = next(n for n in NODES if n != primary)
    p, s = c.status_json(primary), c.status_json(other)
    assert p["postgres"]["running"] and p["postgres"]["in_recovery"] is False
    assert s["postgres"]["running"] and s["postgres"]["in_recovery"] is True
    wait_for(lambda: (c.status_json(other)["postgres"].get("wal_receiver") or {}).get("status") == "streaming",
             30, f"{other} streaming")
    assert c.status_json(other)["postgres"]["wal_receiver"]["sender_host"] == NODES[primary]
    assert holds(c, primary, VIP) and not holds(c, other, VIP)
    assert p["services"]["app"]["active"] and not s["services"]["app"]["active"]


def test_bring_up_from_fresh_data_directories(cluster):
    cluster.wait_converged(120)
    assert_primary(cluster, "mx1")


class Writer:
    """The client: commits rows through the floating IP from its own namespace."""

    def __init__(self, c: TwoNode, first_id: int = 0) -> None:
        self.c = c
        self.out = os.path.join(c.root, f"writes-{time.monotonic_ns()}.log")
        self.stop_file = self.out + ".stop"
        self.p = subprocess.Popen(["ip", "netns", "exec", c.ns["cl"], PY, WRITER,
                                   VIP, self.out, self.stop_file, str(first_id)], cwd=ROOT_DIR, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def acks(self) -> list[tuple[int, float]]:
        if not os.path.exists(self.out):
            return []
        with open(self.out) as f:
            return [(int(a), float(b)) for a, b in (line.split() for line in f if line.strip())]

    def wait_acks(self, n: int, timeout: float = 30) -> None:
        base = len(self.acks())
        wait_for(lambda: len(self.acks()) >= base + n, timeout, f"{n} more acknowledged writes")

    def stop(self) -> list[tuple[int, float]]:
        open(self.stop_file, "w").close()
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
        return self.acks()


def rows_on(c: TwoNode, node: str) -> set[int]:
    r = in_ns(c.ns[node], "runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/psql", "-h", os.path.join(c.root, node, "sock"),
              "-X", "-At", "-d", "postgres", "-c", "SELECT id FROM writes")
    return {int(x) for x in r.stdout.split()}


def switchover(c: TwoNode, to: str, w: Writer) -> float:
    """Edit the spec on both nodes, wait for convergence; return the longest write gap (s)."""
    w.wait_acks(20)
    t0 = time.monotonic()
    c.set_primary(to)
    wait_for(lambda: holds(c, to, VIP) and c.status_json(to)["postgres"]["in_recovery"] is False, 60, f"{to} primary")
    w.wait_acks(20)
    c.wait_converged(60)
    acks = [t for _, t in w.acks() if t >= t0 - 1]
    return max(b - a for a, b in zip(acks, acks[1:]))


def test_planned_switchover_loses_nothing_and_switches_back_20_times(cluster):
    c = cluster
    c.wait_converged(120)
    w = Writer(c)
    outages = []
    try:
        for i in range(20):
            to = "mx2" if i % 2 == 0 else "mx1"
            outages.append(switchover(c, to, w))
            assert_primary(c, to)
    finally:
        acks = w.stop()
    final = "mx1"
    present = rows_on(c, final)
    lost = [i for i, _ in acks if i not in present]
    assert acks and not lost, f"{len(lost)} acknowledged writes lost: {lost[:10]}"
    outages.sort()
    print(f"\nwrite outage over {len(outages)} switchovers: median {outages[len(outages) // 2]:.3f}s, "
          f"min {outages[0]:.3f}s, max {outages[-1]:.3f}s; {len(acks)} acknowledged writes, none lost")


# A client with a query in flight through the floating address when the switchover starts.
# Prints how long it waited and what ended the wait; libpq's keepalive defaults (2 h) are kept,
# as an application's would be.
IN_FLIGHT = """
import sys, time, psycopg
conn = psycopg.connect(host=sys.argv[1], port=5432, user="app", dbname="postgres", connect_timeout=2, autocommit=True)
print("connected", flush=True)
t0 = time.monotonic()
try:
    conn.execute("SELECT pg_sleep(300)")
    print(f"answered {time.monotonic() - t0:.2f}", flush=True)
except psycopg.Error as e:
    print(f"error {time.monotonic() - t0:.2f} {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
"""


def _in_flight(c: TwoNode, host: str) -> subprocess.Popen:
    p = subprocess.Popen(["ip", "netns", "exec", c.ns["cl"], PY, "-c", IN_FLIGHT, host], cwd=ROOT_DIR,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "connected", p.stderr.read() if p.stderr else ""
    time.sleep(0.5)  # the query is running
    return p


def _ended(p: subprocess.Popen, what: str, t0: float) -> tuple[str, float]:
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the client with a query in flight is still waiting 60 s after {what}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    assert out.startswith("error "), f"client: {out!r} {err!r}"
    return out.strip(), time.monotonic() - t0


def test_a_query_in_flight_is_ended_not_left_hanging(cluster):
    # Once a floating address is gone, a connection on it can send nothing: a client waiting
    # for a reply would wait for its TCP keepalive (hours).  On a switchover PostgreSQL stops
    # while its addresses are still here, so it says goodbye itself; when an address goes
    # while PostgreSQL runs on, the connections on it are reset first.
    c = cluster
    c.wait_converged(120)
    p = _in_flight(c, VIP)
    t0 = time.monotonic()
    c.set_primary("mx2")
    out, waited = _ended(p, "the switchover began", t0)
    assert "AdminShutdown" in out or "closed" in out, out
    print(f"\nswitchover: the in-flight query ended {waited:.2f} s after the edit: {out}")
    wait_for(lambda: holds(c, "mx2", VIP) and c.status_json("mx2")["postgres"]["in_recovery"] is False, 60,
             "mx2 primary")
    c.wait_converged(60)

    # an edit drops 10.101.0.1-3 from the spec while mx2 stays Primary
    in_ns(c.ns["cl"], "ip", "route", "add", "10.101.0.0/16", "dev", "eth0")
    p = _in_flight(c, "10.101.0.3")
    t0 = time.monotonic()
    c.n_ips = 1
    c.set_primary("mx2")
    out, waited = _ended(p, "its address was dropped from the spec", t0)
    print(f"address dropped: the in-flight query ended {waited:.2f} s after the edit: {out}")
    wait_for(lambda: not holds(c, "mx2", "10.101.0.3"), 30, "10.101.0.3 removed")
    assert any("1 TCP connection(s) on them reset" in line for line in c.agent_log("mx2").splitlines())
    assert c.status_json("mx2")["postgres"]["in_recovery"] is False and holds(c, "mx2", VIP)


def test_drift_is_healed_and_foreign_addresses_left_alone(cluster):
    c = cluster
    c.wait_converged(120)
    ns = c.ns["mx1"]
    in_ns(ns, "ip", "addr", "del", "10.101.0.2/32", "dev", "eth0")
    in_ns(ns, "ip", "addr", "add", "192.168.55.5/32", "dev", "eth0")
    wait_for(lambda: holds(c, "mx1", "10.101.0.2"), 30, "the deleted floating address to come back")
    c.wait_converged(30)
    assert holds(c, "mx1", "192.168.55.5"), "a foreign address was removed"
    obs = c.status_json("mx1")["interfaces"]["eth0"]["addresses"]
    owned = {a["address"] for a in obs if a["owned"]}
    assert "10.101.0.2/32" in owned and "192.168.55.5/32" not in owned


def test_two_thousand_floating_ips_move_in_one_switchover():
    need_netns()
    need_postgres()
    c = TwoNode(n_ips=2000)
    try:
        c.build("mx1")
        for n in NODES:
            c.start_agent(n)
        c.wait_converged(180)
        t0 = time.monotonic()
        c.set_primary("mx2")

        def moved() -> bool:
            r = in_ns(c.ns["mx2"], "ip", "-o", "-4", "addr", "show", "dev", "eth0")
            return r.stdout.count("\n") >= 2001
        wait_for(moved, 120, "2,000 addresses on mx2")
        t_moved = time.monotonic() - t0
        c.wait_converged(120)
        r = in_ns(c.ns["mx1"], "ip", "-o", "-4", "addr", "show", "dev", "eth0")
        assert r.stdout.count("\n") == 1, "mx1 still holds floating addresses"
        print(f"\n2,000 floating IPs moved mx1 -> mx2: all present on mx2 {t_moved:.2f}s after the edit; "
              f"both converged {time.monotonic() - t0:.2f}s after it")
    finally:
        c.close()


def power_off(c: TwoNode, node: str) -> None:
    """What a dead machine looks like to the rest: agent, PostgreSQL and service gone
    (SIGKILL), its link down and its addresses gone."""
    import signal as sig

    from reconciler.pgrun import postmaster

    c.stop_agent(node, sig.SIGKILL)
    pm = postmaster(c.pgdata(node))
    if pm is not None:
        os.kill(pm.pid, sig.SIGKILL)
        wait_for(lambda: postmaster(c.pgdata(node)) is None, 30, f"{node} postmaster gone")
    c._kill_pidfile(os.path.join(c.root, node, "app.pid"))
    for a in in_ns(c.ns[node], "ip", "-o", "addr", "show", "dev", "eth0").stdout.split("\n"):
        parts = a.split()
        if len(parts) > 3 and parts[2] == "inet" and not parts[3].startswith(NODES[node]):
            in_ns(c.ns[node], "ip", "addr", "del", parts[3], "dev", "eth0")
    in_ns(c.ns[node], "ip", "link", "set", "eth0", "down")


def bridge_port(c: TwoNode, index: int, up: bool) -> None:
    in_ns(c.ns["sw"], "ip", "link", "set", f"{c.prefix}b{index}"[:15], "up" if up else "down")


def test_killed_primary_waits_for_fencing_then_rejoins_rewound(cluster):
    c = cluster
    c.wait_converged(120)
    w = Writer(c)
    w.wait_acks(20)
    bridge_port(c, 1, up=False)  # mx2 cut off: mx1 goes on committing what mx2 never receives
    w.wait_acks(50)
    power_off(c, "mx1")
    acked_by_old_primary = {i for i, _ in w.acks()}  # some of these never reached mx2: lost by fencing
    bridge_port(c, 1, up=True)
    c.set_primary("mx2")
    time.sleep(4)
    st = c.status_json("mx2")
    assert st["postgres"]["in_recovery"] is True and not holds(c, "mx2", VIP), "promoted without fencing"
    r = c.plan("mx2")
    assert r.returncode == 2 and "fenced: [mx1]" in r.stdout
    c.set_primary("mx2", fenced=("mx1",))
    wait_for(lambda: holds(c, "mx2", VIP) and c.status_json("mx2")["postgres"]["in_recovery"] is False, 60,
             "mx2 promoted after fencing")
    w.wait_acks(20)
    in_ns(c.ns["mx1"], "ip", "link", "set", "eth0", "up")
    c.start_agent("mx1")
    seen_writable = []

    def rejoined() -> bool:
        pg = c.status_json("mx1")["postgres"]
        if pg["running"] and pg["in_recovery"] is False:
            seen_writable.append(pg)
        return pg["running"] and pg["in_recovery"] and (pg.get("wal_receiver") or {}).get("status") == "streaming"
    wait_for(rejoined, 90, "mx1 rejoined as a streaming standby of mx2", every=0.1)
    assert not seen_writable, "the returning old primary accepted writes"
    acks = w.stop()
    assert "pg_rewind" in c.agent_log("mx1")
    on_mx2 = rows_on(c, "mx2")
    after = [i for i, _ in acks if i not in acked_by_old_primary]
    assert after and all(i in on_mx2 for i in after), "writes acknowledged by the new primary were lost"
    wait_for(lambda: rows_on(c, "mx1") >= set(after), 30, "mx1 replicated the new primary's rows")


def test_agents_killed_at_every_action_boundary_still_converge_without_loss(cluster):
    """Each time either agent logs a finished action, it is SIGKILLed and started again."""
    import signal as sig
    import threading

    c = cluster
    c.wait_converged(120)
    w = Writer(c)
    kills: list[str] = []
    stop = threading.Event()

    def finished(n: str) -> int:
        log = c.agent_log(n)
        return log.count(": ok in ") + log.count(": failed in ")

    def killer() -> None:
        seen = {n: finished(n) for n in NODES}
        while not stop.is_set():
            for n in NODES:
                done = finished(n)
                if done > seen[n]:
                    c.stop_agent(n, sig.SIGKILL)
                    kills.append(n)
                    seen[n] = finished(n)
                    c.start_agent(n)
            time.sleep(0.005)

    try:
        for to in ("mx2", "mx1"):
            w.wait_acks(20)
            t = threading.Thread(target=killer)
            t.start()
            try:
                c.set_primary(to)
                wait_for(lambda: c.converged("mx1") and c.converged("mx2"), 300, "convergence under kills", every=0.5)
            finally:
                stop.set()
                t.join()
                stop.clear()
            c.wait_converged(60)
            assert_primary(c, to)
            w.wait_acks(20)
    finally:
        acks = w.stop()
    present = rows_on(c, "mx1")
    lost = [i for i, _ in acks if i not in present]
    assert len(kills) >= 10 and not lost, f"kills={len(kills)}, lost={lost[:10]}"
    print(f"\n{len(kills)} agent kills at action boundaries over 2 switchovers; {len(acks)} writes, none lost")


def test_bad_edit_keeps_the_last_good_spec_and_sigterm_stops_cleanly(cluster):
    import signal as sig

    c = cluster
    c.wait_converged(120)
    path = c.spec_path("mx1")
    good = open(path).read()
    with open(path + ".tmp", "w") as f:
        f.write(good.replace("primary: mx1", "primary: mx9"))
    os.replace(path + ".tmp", path)
    wait_for(lambda: "spec edit refused, keeping the last good one" in c.agent_log("mx1"), 10, "the refusal in the log")
    assert "cluster.yaml:6:10: primary: not one of the nodes (mx1, mx2)" in c.agent_log("mx1")
    assert "mx9" not in c.agent_log("mx1")  # errors never quote the file
    assert holds(c, "mx1", VIP), "a refused edit changed something"
    p = c.agents["mx1"]
    os.killpg(p.pid, sig.SIGTERM)
    assert p.wait(30) == 0
    c.agents.pop("mx1")
    assert c.agent_log("mx1").rstrip().endswith("mx1: stopped")
    with open(path, "w") as f:
        f.write(good)
    assert c.status_json("mx1")["postgres"]["running"], "stopping the agent stopped PostgreSQL"


def test_apply_one_pass_exit_codes_and_the_terminal_prompt():
    import pty

    need_netns()
    need_postgres()
    c = TwoNode(n_ips=4)
    try:
        c.build("mx1")
        apply = [PY, "-m", "reconciler", "apply", c.spec_path("mx1"), "--node", "mx1"]
        r = in_ns(c.ns["mx1"], *apply, "--yes", check=False, timeout=120)
        assert r.returncode == 2 and "Stopped: postgres: start as the primary: waiting: peer mx2 is unreachable" in r.stdout
        c.start_agent("mx2")  # now mx1 can see that mx2 has nothing it lacks
        pid, fd = pty.fork()
        if pid == 0:
            os.execvp("ip", ["ip", "netns", "exec", c.ns["mx1"], *apply])
        out = b""
        while b"Only 'yes' is accepted" not in out:
            out += os.read(fd, 4096)
        os.write(fd, b"no\n")
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 2 and b"Apply cancelled." in out
        assert not holds(c, "mx1", VIP)
        r = in_ns(c.ns["mx1"], *apply, "--yes", check=False, timeout=120)
        assert r.returncode == 0 and "Apply complete" in r.stdout, r.stdout + r.stderr
        assert holds(c, "mx1", VIP)
        r = in_ns(c.ns["mx1"], *apply, "--yes", check=False, timeout=120)
        assert r.returncode == 0 and "No changes." in r.stdout
    finally:
        c.close()
