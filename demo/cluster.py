"""A real two-node cluster on one machine: network namespaces on a bridge, a PostgreSQL 15
per node, and the real agent (`reconciler run`) inside each node's namespace.

    sw  (bridge br0) ── mx1 eth0 10.77.0.1/16   agent, PostgreSQL :5432, service `app`
                     ── mx2 eth0 10.77.0.2/16   agent, PostgreSQL :5432, service `app`
                     ── cl  eth0 10.77.0.100/16 the client: writes through the floating IP

Everything lives in one temp dir and in namespaces named with a per-run prefix; `close()`
stops the agents, the PostgreSQL servers and the service daemons started here (by pid, and
by cwd under the temp dir), deletes the namespaces and the temp dir, even after a failure.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from reconciler.pgrun import data_owner, postmaster, run_as_owner

PG_BIN = os.environ.get("RECONCILER_PG_BIN", "/usr/lib/postgresql/15/bin")

NODES = {"mx1": "10.77.0.1", "mx2": "10.77.0.2"}
CLIENT_ADDR = "10.77.0.100"
VIP = "10.77.100.1"
# Both nodes share one filesystem here, so data_dir, socket_dir and the service pidfile
# differ per node ({node} in the spec text); on real machines the spec is identical.
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SVC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "svc_daemon.py")
WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "writer.py")
PY = sys.executable

HBA = """\
local  all          postgres    peer map=reconciler
local  replication  postgres    peer map=reconciler
host   replication  replicator  10.77.0.0/16  scram-sha-256
host   postgres     replicator  10.77.0.0/16  scram-sha-256
host   postgres     app         10.77.0.0/16  trust
"""
IDENT = "reconciler  root      postgres\nreconciler  postgres  postgres\n"
BASE_CONF = """
listen_addresses = '*'
wal_keep_size = '256MB'
wal_retrieve_retry_interval = '200ms'
wal_receiver_status_interval = '1s'
log_line_prefix = '%m [%p] '
"""
SETUP_SQL = [
    "CREATE ROLE replicator LOGIN REPLICATION PASSWORD '{pw}'",
    "CREATE ROLE app LOGIN",
    "CREATE TABLE writes (id bigint PRIMARY KEY, at timestamptz DEFAULT now())",
    "GRANT INSERT, SELECT ON writes TO app",
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO replicator",
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO replicator",
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO replicator",
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO replicator",
]


def sh(*argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=check)


def in_ns(ns: str, *argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *argv, timeout=timeout, check=check)


def wait_for(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class TwoNode:
    def __init__(self, n_ips: int = 4, root: str | None = None, template: str | None = None) -> None:
        """`root`: a fixed directory (created here, must not exist); `template`: the spec text
        to use (its `primary:`/`fenced:` lines are rewritten by `set_primary`)."""
        self.prefix = f"rc{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.ns = {n: f"{self.prefix}-{n}" for n in ("sw", "mx1", "mx2", "cl")}
        if root is not None:
            os.mkdir(root, 0o755)
            self.root = root
        else:
            self.root = tempfile.mkdtemp(prefix="rc2n-")
        os.chmod(self.root, 0o755)
        self.template = template
        self.n_ips = n_ips
        self.agents: dict[str, subprocess.Popen] = {}
        self.password = "pw-" + secrets.token_hex(10)
        self._made_ns: list[str] = []

    # ---- building -------------------------------------------------------------------------
    def build(self, primary: str = "mx1") -> None:
        self._network()
        self._files()
        self._init_primary_pgdata("mx1")
        self._empty_pgdata("mx2")
        for n in NODES:
            self.write_spec(n, primary)

    def _network(self) -> None:
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            self._made_ns.append(ns)
            in_ns(ns, "ip", "link", "set", "lo", "up")
        sw = self.ns["sw"]
        in_ns(sw, "ip", "link", "add", "br0", "type", "bridge")
        in_ns(sw, "ip", "link", "set", "br0", "up")
        for i, (node, addr) in enumerate([("mx1", NODES["mx1"]), ("mx2", NODES["mx2"]), ("cl", CLIENT_ADDR)]):
            a, b = f"{self.prefix}a{i}", f"{self.prefix}b{i}"
            sh("ip", "link", "add", a[:15], "type", "veth", "peer", "name", b[:15])
            sh("ip", "link", "set", a[:15], "netns", self.ns[node], "name", "eth0")
            sh("ip", "link", "set", b[:15], "netns", sw)
            in_ns(sw, "ip", "link", "set", b[:15], "master", "br0", "up")
            in_ns(self.ns[node], "ip", "addr", "add", f"{addr}/16", "dev", "eth0")
            in_ns(self.ns[node], "ip", "link", "set", "eth0", "up")

    def _files(self) -> None:
        self.secret_file = os.path.join(self.root, "peer.secret")
        self.password_file = os.path.join(self.root, "replication.password")
        for path, text in ((self.secret_file, secrets.token_hex(32)), (self.password_file, self.password)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text + "\n")
        os.mkdir(os.path.join(self.root, "bin"), 0o755)
        os.symlink(PY, os.path.join(self.root, "bin", "python"))
        os.symlink(SVC, os.path.join(self.root, "bin", "svc_daemon.py"))
        pw = pwd.getpwnam("postgres")
        for n in NODES:
            d = os.path.join(self.root, n)
            os.mkdir(d, 0o755)
            for sub in ("pgdata", "sock"):
                os.mkdir(os.path.join(d, sub), 0o700)
                os.chown(os.path.join(d, sub), pw.pw_uid, pw.pw_gid)

    def pgdata(self, node: str) -> str:
        return os.path.join(self.root, node, "pgdata")

    def _init_primary_pgdata(self, node: str) -> None:
        d = self.pgdata(node)
        owner = data_owner(d)
        run_as_owner(owner, [f"{PG_BIN}/initdb", "-D", d, "-U", "postgres", "--data-checksums", "--auth-local=peer",
                             "--auth-host=scram-sha-256", "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C"], 120)
        with open(os.path.join(d, "postgresql.conf"), "a") as f:
            f.write(BASE_CONF)
        for fname, text in (("pg_hba.conf", HBA), ("pg_ident.conf", IDENT)):
            with open(os.path.join(d, fname), "w") as f:
                f.write(text)
        ctl = [f"{PG_BIN}/pg_ctl", "-D", d, "-w", "-t", "60"]
        opts = f"-c listen_addresses='' -c unix_socket_directories='{d}'"
        run_as_owner(owner, ctl + ["-o", opts, "-l", os.path.join(d, "setup.log"), "start"], 90)
        try:
            for stmt in SETUP_SQL:
                run_as_owner(owner, [f"{PG_BIN}/psql", "-h", d, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres",
                                     "-c", stmt.format(pw=self.password)], 30)
        finally:
            run_as_owner(owner, ctl + ["-m", "fast", "stop"], 90)

    def _empty_pgdata(self, node: str) -> None:
        assert not os.listdir(self.pgdata(node))

    # ---- the spec ---------------------------------------------------------------------------
    def spec_text(self, primary: str, fenced: tuple[str, ...] = (), drift_s: float = 1.0) -> str:
        if self.template is not None:
            text = re.sub(r"(?m)^primary: \S+", f"primary: {primary}", self.template)
            return re.sub(r"(?m)^fenced: \[[^\]]*\]", f"fenced: [{', '.join(fenced)}]", text)
        n = self.n_ips
        ips = [f"    - {VIP}/16"]
        if n > 1:
            last = 0x0A650000 + n - 1  # 10.101.x.y
            ips.append(f"    - 10.101.0.1-{last >> 24 & 255}.{last >> 16 & 255}.{last >> 8 & 255}.{last & 255}/32")
        svc = lambda n: [f"{self.root}/bin/python", f"{self.root}/bin/svc_daemon.py", n, f"{self.root}/{{node}}/app.pid"]  # noqa: E731
        return f"""# yaml-language-server: $schema={ROOT_DIR}/specs/cluster.schema.json
cluster: lab
nodes:
  mx1: {{address: {NODES['mx1']}}}
  mx2: {{address: {NODES['mx2']}}}
primary: {primary}
fenced: [{', '.join(fenced)}]
floating_ips:
  interface: eth0
  addresses:
{chr(10).join(ips)}
postgres:
  data_dir: {self.root}/{{node}}/pgdata
  socket_dir: {self.root}/{{node}}/sock
  bin_dir: {PG_BIN}
  port: 5432
  replication_user: replicator
  password_file: {self.password_file}
services:
  - name: app
    commands:
      start: {svc('start')}
      stop: {svc('stop')}
      status: [/usr/bin/pgrep, -F, {self.root}/{{node}}/app.pid, -f, svc_daemon.py run]  # as cheap as systemctl is-active
announce: {{count: 2, interval_ms: 50, rate_limit_pps: 20000}}
agent:
  drift_check_interval_s: {drift_s}
  peer_port: 7170
  peer_secret_file: {self.secret_file}
"""

    def spec_path(self, node: str) -> str:
        return os.path.join(self.root, node, "cluster.yaml")

    def write_spec(self, node: str, primary: str, fenced: tuple[str, ...] = ()) -> None:
        """Write (atomically, as an editor or git would) this node's copy of the spec."""
        text = self.spec_text(primary, fenced).replace("{node}", node).replace("'", '"')
        tmp = self.spec_path(node) + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.spec_path(node))

    def set_primary(self, primary: str, fenced: tuple[str, ...] = ()) -> None:
        for n in NODES:
            self.write_spec(n, primary, fenced)

    # ---- agents -------------------------------------------------------------------------------
    def start_agent(self, node: str) -> None:
        log = open(os.path.join(self.root, node, "agent.log"), "a")
        self.agents[node] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[node], PY, "-m", "reconciler", "run", self.spec_path(node), "--node", node],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT_DIR, start_new_session=True)

    def stop_agent(self, node: str, sig: int = signal.SIGTERM) -> None:
        p = self.agents.pop(node, None)
        if p is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)

    def agent_log(self, node: str) -> str:
        with open(os.path.join(self.root, node, "agent.log")) as f:
            return f.read()

    def plan(self, node: str) -> subprocess.CompletedProcess:
        return in_ns(self.ns[node], PY, "-m", "reconciler", "plan", self.spec_path(node), "--node", node,
                     timeout=60, check=False)

    def status_json(self, node: str) -> dict:
        import json

        r = in_ns(self.ns[node], PY, "-m", "reconciler", "status", self.spec_path(node), "--node", node, "--json",
                  timeout=60)
        return json.loads(r.stdout)

    def converged(self, node: str) -> bool:
        return self.plan(node).returncode == 0

    def wait_converged(self, timeout: float = 90) -> None:
        wait_for(lambda: all(self.converged(n) for n in NODES), timeout, "both nodes converged", every=0.3)

    # ---- the end -------------------------------------------------------------------------------
    def close(self) -> None:
        for n in list(self.agents):
            with contextlib.suppress(Exception):
                self.stop_agent(n, signal.SIGKILL)
        for n in NODES:
            d = self.pgdata(n)
            pm = postmaster(d) if os.path.isdir(d) else None
            if pm is not None:
                with contextlib.suppress(Exception):
                    os.kill(pm.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self._kill_pidfile(os.path.join(self.root, n, "app.pid"))
        _kill_cwd_under(self.root)
        for ns in self._made_ns:  # whatever still runs inside our namespaces (clients, daemons)
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self._made_ns):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _kill_pidfile(path: str) -> None:
        with open(path) as f:
            os.kill(int(f.read().strip()), signal.SIGKILL)


def _kill_cwd_under(root: str) -> None:
    real = os.path.realpath(root)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.path.realpath(os.readlink(f"/proc/{pid}/cwd")).startswith(real + os.sep):
                os.kill(int(pid), signal.SIGKILL)
