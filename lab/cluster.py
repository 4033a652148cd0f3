"""The reconciler itself on the two-VM lab: real DRBD 8.4, PostgreSQL 15 and floating IPs.

`LabCluster(lab)` turns a provisioned lab (`lab.provision`) into the cluster of
`spec_text()`: r0 mounted on /srv/hvmail on the Primary, PostgreSQL on each VM's own
storage (its persistent disk, not DRBD; initialised on mx1, cloned to mx2 by the agent),
floating IPs on eth1 (the management network, where the host's client is), the
`svc_daemon.py` stand-in service started with its working directory on the DRBD mount
(so a service left running keeps the mount busy), and `reconciler run` inside each VM.
The spec is byte-for-byte the same on both nodes.

Everything it creates is inside the VMs (tmpfs, or their disks in the lab's state
directory), so `lab down` removes it all; the host keeps nothing.  `install_boot` makes the
agent start at every boot of a node, as the packaged unit does (`clean_reboot`, and
`Lab.power_off` / `power_on` for a power cut).  Python under TCG is slow: every in-VM CLI
call costs seconds, so state is read with one `reconciler status --json` per node and
progress is followed in the agent logs (`wait_log`).
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from demo.cluster import IDENT, SETUP_SQL, SVC  # the namespace demo's roles, table and stand-in service
from lab.client import ExecResult, LabError
from lab.lab import Lab
from lab.provision import DEVICE, RESOURCE
from lab.topology import BOOT_HOOK, NODES, PERSISTED
from lab.topology import node as lab_node
from reconciler import _cmd

PY = str(Path(sys.executable).parent / "python")  # the venv's python: the same path inside the VMs
# SVC (demo/svc_daemon.py, standard library only) runs by its host path: the same inside the VMs
PG_BIN = "/usr/lib/postgresql/15/bin"

MOUNT = "/srv/hvmail"
BASE = "/run/rce2e"  # tmpfs in the VM, fresh at each boot: PostgreSQL socket, service pidfile
# On the node's own persistent disk (lab.topology.PERSISTED), not DRBD: kept across reboots.
ETC = "/etc/reconciler"  # the spec and the secrets
PGDATA = "/var/lib/rce2e/pgdata"
SOCK = f"{BASE}/sock"
SPEC = f"{ETC}/cluster.yaml"
AGENT_LOG = "/var/lib/rce2e/agent.log"
STATE_DIR = "/var/lib/rce2e/state"
BOOT_PID = f"{BASE}/boot.pid"
IFACE = "eth1"
# The floating addresses sit in the lab's management /24 (Layout.mgmt_net), which the host
# reaches: .100 is the one the client uses, .101-.103 ride along.
VIP_HOST, MORE_HOSTS = 100, (101, 103)

HBA = """\
local  all          postgres    peer map=reconciler
local  replication  postgres    peer map=reconciler
host   replication  replicator  10.0.0.0/24   scram-sha-256
host   postgres     replicator  10.0.0.0/24   scram-sha-256
host   postgres     app         {mgmt}.0/24 trust
"""
CONF = """
listen_addresses = '*'
shared_buffers = '32MB'
max_connections = 30
wal_keep_size = '64MB'
wal_retrieve_retry_interval = '200ms'
wal_receiver_status_interval = '1s'
log_line_prefix = '%m [%p] '
"""


# One observation takes 1-5 s in the VMs; the peer's 1 s default fetch timeout would make
# each agent see the other as unreachable most of the time (reconciler.agent.peering).
PEER_TIMEOUT_S = 8.0
MTA_SERVICE = """\
  - name: postfix            # lab.mta: queue and maildir on the DRBD mount
    commands:
      start: [/usr/sbin/postfix, start]
      stop: [/usr/sbin/postfix, stop]
      # Postfix's master runs (`postfix status` is a shell script: seconds under TCG, more
      # than the status timeout on a loaded VM; pgrep -F refuses master.pid, space-padded)
      status: [/usr/bin/pgrep, -f, ^/usr/lib/postfix/sbin/master]
"""


def floating(mgmt_net: str) -> list[str]:
    """The floating addresses of a lab whose management /24 is `mgmt_net`, as `ip` shows them."""
    lo, hi = MORE_HOSTS
    return [f"{mgmt_net}.{h}/24" for h in (VIP_HOST, *range(lo, hi + 1))]


def spec_text(mgmt_net: str, primary: str = "mx1", fenced: tuple[str, ...] = (), mta: bool = False) -> str:
    """The lab's spec; `mta`: Postfix (lab.mta) is the service instead of the stand-in."""
    svc = lambda verb: f"[{PY}, {SVC}, {verb}, {BASE}/app.pid]"  # noqa: E731
    nodes = "\n".join(f"  {n.name}: {{address: {n.repl_ip}}}" for n in NODES)
    services = MTA_SERVICE if mta else f"""\
  - name: app                # its working directory is on the DRBD mount while it runs
    commands:
      start: [/usr/bin/env, -C, {MOUNT}, {PY}, {SVC}, start, {BASE}/app.pid]
      stop: {svc('stop')}
      status: [/usr/bin/pgrep, -F, {BASE}/app.pid, -f, svc_daemon.py run]   # no python start (1-2 s under TCG)
"""
    return f"""# The two-VM lab cluster (lab.cluster): the same file on mx1 and mx2.
cluster: lab
nodes:
{nodes}
primary: {primary}
fenced: [{', '.join(fenced)}]
floating_ips:
  interface: {IFACE}
  addresses:
    - {mgmt_net}.{VIP_HOST}/24
    - {mgmt_net}.{MORE_HOSTS[0]}-{mgmt_net}.{MORE_HOSTS[1]}/24
drbd:
  - name: {RESOURCE}
    device: {DEVICE}
    mount: {MOUNT}
    fstype: ext4
    options: [noatime]
postgres:
  data_dir: {PGDATA}
  socket_dir: {SOCK}
  bin_dir: {PG_BIN}
  port: 5432
  replication_user: replicator
  password_file: {ETC}/replication.password
services:
{services}announce: {{count: 3, interval_ms: 100, rate_limit_pps: 2000}}
agent:
  drift_check_interval_s: 10   # each observation costs 1-5 s of the VM's one emulated CPU
  peer_port: 7170
  peer_secret_file: {ETC}/peer.secret
"""


def last_state(log: str) -> str:
    """The agent's last reported state in `log`: converged, waiting, acted, failed or ''."""
    state = ""
    for line in log.splitlines():
        if ": converged at " in line:
            state = "converged"
        elif ": waiting: " in line:
            state = "waiting"
        elif re.search(r": (ok|failed) in [0-9.]+s", line):
            state = "acted" if ": ok in " in line else "failed"
    return state


class LabCluster:
    def __init__(self, lab: Lab, mta: bool = False) -> None:
        self.lab, self.mta = lab, mta
        self.vip = f"{lab.lay.mgmt_net}.{VIP_HOST}"
        self.password = "pw-" + secrets.token_hex(10)
        self.secret = secrets.token_hex(32)
        self.agents: dict[str, int] = {}
        self.timings: dict[str, float] = {}
        self.cli_calls = 0
        self.cli_seconds = 0.0

    # ---- plumbing ---------------------------------------------------------------------------
    def sh(self, node: str, script: str, timeout: float = 60.0, input_text: str | None = None,
           check: bool = True) -> ExecResult:
        r = self.lab.exec(node, ["sh", "-ec", script], timeout=timeout, input_text=input_text)
        return r.check() if check else r

    def put(self, node: str, path: str, text: str, mode: str = "0644") -> None:
        """Write `path` atomically (a temp file renamed over it, as an editor or git does)."""
        q = shlex.quote(path)
        self.sh(node, f"umask 077; mkdir -p $(dirname {q}); cat > {q}.tmp; chmod {mode} {q}.tmp; mv {q}.tmp {q}",
                input_text=text)

    def psql(self, node: str, sql: str, timeout: float = 60.0) -> ExecResult:
        return self.lab.exec(node, ["runuser", "-u", "postgres", "--", f"{PG_BIN}/psql", "-h", SOCK, "-X", "-At",
                                    "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c", sql], timeout=timeout)

    def cli(self, node: str, *args: str, timeout: float = 120.0) -> ExecResult:
        self.cli_calls += 1
        t0 = time.monotonic()
        try:
            return self.lab.exec(node, [PY, "-m", "reconciler", *args], timeout=timeout,
                                 env={"RECONCILER_PEER_TIMEOUT_S": f"{PEER_TIMEOUT_S:g}"})
        finally:
            self.cli_seconds += time.monotonic() - t0

    # ---- building ---------------------------------------------------------------------------
    def build(self, primary: str = "mx1") -> None:
        """Files on both nodes, PostgreSQL initialised on mx1 (mx2's data dir left empty), the spec."""
        t0 = time.monotonic()
        for n in NODES:
            self.sh(n.name, f"mkdir -p {BASE} {MOUNT} {STATE_DIR} $(dirname {PGDATA}); "
                            f"install -d -m 0700 -o postgres -g postgres {PGDATA} {SOCK}")
            self.put(n.name, f"{ETC}/peer.secret", self.secret + "\n", "0600")
            self.put(n.name, f"{ETC}/replication.password", self.password + "\n", "0600")
        self._initdb(NODES[0].name)
        self.set_spec(primary)
        self.timings["build_s"] = time.monotonic() - t0

    def _initdb(self, node: str) -> None:
        pg = f"runuser -u postgres -- {PG_BIN}"
        self.sh(node, f"{pg}/initdb -D {PGDATA} -U postgres --data-checksums --auth-local=peer "
                      "--auth-host=scram-sha-256 --no-sync --no-instructions -E UTF8 --locale=C >/dev/null", 300)
        for name, text in (("pg_hba.conf", HBA.format(mgmt=self.lab.lay.mgmt_net)), ("pg_ident.conf", IDENT)):
            self.put(node, f"{PGDATA}/{name}", text, "0600")
        self.sh(node, f"cat >> {PGDATA}/postgresql.conf; chown postgres:postgres {PGDATA}/*.conf", input_text=CONF)
        opts = f"-c listen_addresses='' -c unix_socket_directories='{SOCK}'"
        ctl = f"{pg}/pg_ctl -D {PGDATA} -w -t 120"
        self.sh(node, f"{ctl} -o {shlex.quote(opts)} -l {PGDATA}/setup.log start >/dev/null", 180)
        try:
            sql = " ".join(f"-c {shlex.quote(s.format(pw=self.password))}" for s in SETUP_SQL)
            self.sh(node, f"runuser -u postgres -- {PG_BIN}/psql -h {SOCK} -X -q -v ON_ERROR_STOP=1 -d postgres {sql}",
                    120)
        finally:
            self.sh(node, f"{ctl} -m fast stop >/dev/null", 180)

    # ---- the spec and the agents --------------------------------------------------------------
    def set_spec(self, primary: str, fenced: tuple[str, ...] = (), nodes: tuple[str, ...] = ("mx1", "mx2")) -> None:
        text = spec_text(self.lab.lay.mgmt_net, primary, fenced, self.mta)
        for n in nodes:
            self.put(n, SPEC, text)

    def start_agent(self, node: str) -> None:
        cmd = (f"RECONCILER_PEER_TIMEOUT_S={PEER_TIMEOUT_S:g} exec {PY} -m reconciler run {SPEC} --node {node} "
               f"--state-dir {STATE_DIR} >>{AGENT_LOG} 2>&1 </dev/null")
        self.agents[node] = self.lab.spawn(node, ["sh", "-c", cmd])

    def start_agents(self) -> None:
        for n in NODES:
            self.start_agent(n.name)

    def boot_hook(self, node: str) -> str:
        """The lab's stand-in for what systemd does at boot for the packaged unit
        (packaging/reconciler.service): tmpfiles for /run, then the agent in the foreground,
        started again 5 s after it fails (Restart=on-failure, RestartSec=5)."""
        run = (f"RECONCILER_PEER_TIMEOUT_S={PEER_TIMEOUT_S:g} PYTHONUNBUFFERED=1 {PY} -m reconciler run {SPEC} "
               f"--node {node} --state-dir {STATE_DIR}")
        return f"""#!/bin/sh
# {BOOT_HOOK}: run by the lab's PID 1 at every boot of {node} (lab.initrd).
install -d -m 0755 {BASE} && install -d -m 0700 -o postgres -g postgres {SOCK}
mkdir -p {MOUNT}
echo $$ > {BOOT_PID}
echo "--- boot $(cut -d' ' -f1 /proc/uptime) s after power-on: agent starting" >>{AGENT_LOG}
while :; do
  {run} >>{AGENT_LOG} 2>&1 </dev/null && break
  sleep 5
done
"""

    def install_boot(self, node: str, start: bool = True) -> None:
        """Make `node` start its agent at every boot (and now, with `start`), instead of
        `start_agent`'s one-off process."""
        self.put(node, BOOT_HOOK, self.boot_hook(node), "0700")
        if start:
            self.lab.spawn(node, [BOOT_HOOK])

    def stop_boot_agent(self, node: str, timeout: float = 60.0) -> None:
        """Stop the agent `install_boot` started (the unit's stop: SIGTERM to the agent
        alone, PostgreSQL and the services keep running) and its restart loop."""
        agent = f"pgrep -f '^{PY} -m reconciler run' || true"
        wait = f"i=0; while [ -n \"$({agent})\" ] && [ $i -lt {int(timeout * 5)} ]; do sleep 0.2; i=$((i+1)); done"
        self.sh(node, f"[ -f {BOOT_PID} ] && kill -TERM $(cat {BOOT_PID}) 2>/dev/null; "
                      f"for p in $({agent}); do kill -TERM $p; done; {wait}", timeout + 10)

    def clean_reboot(self, node: str) -> float:
        """Reboot `node` the way systemd shuts a node down: the agent's unit stopped first,
        then the managed service, PostgreSQL (fast), the DRBD mount, DRBD itself, the disks
        synced; the lab then starts the VM again (qemu runs with -no-reboot).  Seconds until
        its lab agent answers again."""
        t0 = time.monotonic()
        self.stop_boot_agent(node)
        self.sh(node, f"""
{PY} {SVC} stop {BASE}/app.pid >/dev/null 2>&1 || true
if [ -f {PGDATA}/postmaster.pid ]; then runuser -u postgres -- {PG_BIN}/pg_ctl -D {PGDATA} -m fast -w -t 120 stop; fi
if mountpoint -q {MOUNT}; then umount {MOUNT}; fi
drbdadm down {RESOURCE} || true
sync
""", 240)
        binds = " ".join(PERSISTED)
        self.lab.spawn(node, ["sh", "-c", f"sleep 1; sync; umount {binds} /persist; sync; reboot -f"])
        self.lab.wait_off(node)
        self.lab.power_on(node)
        return time.monotonic() - t0

    def edit_spec_while_off(self, node: str, primary: str, fenced: tuple[str, ...] = ()) -> None:
        """Replace the spec on a node that is off, on its disk image (e2fsck replays the
        journal a power cut left first): the lab's way for an operator to change the file a
        node finds at boot (a git checkout would fetch it)."""
        if self.lab.running(node):
            raise LabError(f"{node} is running: use set_spec")
        img = str(self.lab.lay.persist(lab_node(node)))
        text = spec_text(self.lab.lay.mgmt_net, primary, fenced, self.mta)
        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "cluster.yaml"
            f.write_text(text)
            f.chmod(0o644)
            fsck = _cmd.run(["e2fsck", "-f", "-y", img], timeout=120)
            if fsck.rc not in (0, 1):
                raise LabError(f"e2fsck {img}: {fsck.describe()}")
            target = SPEC.lstrip("/")
            for req in (f"rm {target}", f"write {f} {target}"):
                r = _cmd.run(["debugfs", "-w", "-R", req, img], timeout=60)
                if not r.ok or "rror" in r.stderr:
                    raise LabError(f"debugfs {req!r} on {img}: {r.describe()}")
            back = _cmd.run(["debugfs", "-R", f"cat {target}", img], timeout=60)
            if back.stdout != text:
                raise LabError(f"{img}: the spec written is not read back")

    def stop_agent(self, node: str, timeout: float = 60.0) -> None:
        pid = self.agents.pop(node, None)
        if pid is None:
            return
        wait = f"i=0; while kill -0 {pid} 2>/dev/null && [ $i -lt {int(timeout * 5)} ]; do sleep 0.2; i=$((i+1)); done"
        self.sh(node, f"kill -TERM {pid} 2>/dev/null || exit 0; {wait}", timeout + 10)

    def log(self, node: str, since: int = 0) -> str:
        """The agent's log from byte offset `since` (see `offsets`)."""
        raw = self.sh(node, f"cat {AGENT_LOG} 2>/dev/null || true").stdout.encode("utf-8", "surrogateescape")
        return raw[since:].decode("utf-8", "replace")

    def log_size(self, node: str) -> int:
        return len(self.log(node).encode("utf-8", "surrogateescape"))

    def wait_log(self, what: str, ok: Callable[[dict[str, str]], Any], since: dict[str, int] | None = None,
                 timeout: float = 180.0, every: float = 1.0) -> Any:
        """Poll both agent logs (from byte offsets `since`) until `ok(logs)` is truthy."""
        since = since or {}
        deadline = time.monotonic() + timeout
        while True:
            logs = {n.name: self.log(n.name, since.get(n.name, 0)) for n in NODES}
            v = ok(logs)
            if v:
                return v
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n} ---\n" + "\n".join(t.splitlines()[-15:]) for n, t in logs.items())
                raise LabError(f"timed out after {timeout:.0f} s waiting for {what}; agent logs:\n{tails}")
            time.sleep(every)

    def offsets(self) -> dict[str, int]:
        return {n.name: self.log_size(n.name) for n in NODES}

    def wait_converged(self, since: dict[str, int] | None = None, timeout: float = 240.0) -> float:
        """Until both agents' last logged state (after `since`) is converged; seconds taken."""
        t0 = time.monotonic()
        self.wait_log("both agents converged", lambda logs: all(last_state(t) == "converged" for t in logs.values()),
                      since, timeout)
        return time.monotonic() - t0

    # ---- reading state --------------------------------------------------------------------------
    def status(self, node: str) -> dict[str, Any]:
        r = self.cli(node, "status", SPEC, "--node", node, "--json").check()
        return dict(json.loads(r.stdout))

    def both(self, fn: Callable[[str], Any]) -> dict[str, Any]:
        """fn(node) on both nodes at once (each VM has its own emulated CPU)."""
        with ThreadPoolExecutor(len(NODES)) as pool:
            futures = {n.name: pool.submit(fn, n.name) for n in NODES}
            return {name: f.result() for name, f in futures.items()}

    def statuses(self) -> dict[str, dict[str, Any]]:
        return self.both(self.status)

    def plan(self, node: str) -> ExecResult:
        return self.cli(node, "plan", SPEC, "--node", node)

    def addresses(self, node: str) -> set[str]:
        """IPv4 addresses on eth1 (without prefix)."""
        out = self.lab.exec(node, ["ip", "-o", "-4", "addr", "show", "dev", IFACE]).check().stdout
        return {w.split("/")[0] for line in out.splitlines() for w in line.split()[3:4]}

    def holds(self, node: str, ip: str | None = None) -> bool:
        return (ip or self.vip) in self.addresses(node)

    def rows(self, node: str) -> set[int]:
        r = self.psql(node, "SELECT id FROM writes").check()
        return {int(x) for x in r.stdout.split()}


class Writer:
    """The client, on the host: writer.py's loop (one autocommit INSERT per acknowledged row
    through the floating IP, reconnecting after any error, each ack recorded as (id, monotonic
    time)), in a thread and paced, so that it does not use up the Primary VM's one CPU."""

    def __init__(self, host: str, pace_s: float = 0.05) -> None:
        self.host, self.pace_s = host, pace_s
        self._acks: list[tuple[int, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg

        from demo.writer import commit_rows

        def connect() -> psycopg.Connection:
            # tcp_user_timeout: a commit sent to an address that moved fails in 10 s, not in minutes
            return psycopg.connect(host=self.host, port=5432, user="app", dbname="postgres", connect_timeout=2,
                                   autocommit=True, tcp_user_timeout=10000)

        def acked(i: int) -> None:
            with self._lock:
                self._acks.append((i, time.monotonic()))

        commit_rows(connect, acked, self._stop.is_set, pace_s=self.pace_s, retry_s=0.05, wait=self._stop.wait)

    def acks(self) -> list[tuple[int, float]]:
        with self._lock:
            return list(self._acks)

    def wait_acks(self, n: int, timeout: float = 120.0) -> float:
        """Until `n` more commits are acknowledged; seconds taken."""
        base, t0 = len(self.acks()), time.monotonic()
        while len(self.acks()) < base + n:
            if time.monotonic() - t0 > timeout:
                raise LabError(f"timed out after {timeout:.0f} s waiting for {n} more acknowledged writes "
                               f"through {self.host} (have {len(self.acks())})")
            time.sleep(0.1)
        return time.monotonic() - t0

    def stop(self) -> list[tuple[int, float]]:
        self._stop.set()
        self._thread.join(30)
        return self.acks()

    @staticmethod
    def longest_gap(acks: list[tuple[int, float]], since: float) -> float:
        ts = [t for _, t in acks if t >= since]
        return max((b - a for a, b in zip(ts, ts[1:])), default=0.0)
