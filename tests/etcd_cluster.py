"""Three real etcd 3.4 members (Debian's `etcd`) in three fresh network namespaces on one bridge.

Each member has its own namespace (`mx1`, `mx2`, `wit` roles), address 10.77.0.{1,2,3}/24 and
data directory under the test's temporary directory.  `cut(a, b)` drops the traffic between two
of them (a blackhole route in each: both directions), `heal` undoes it; `isolate(a)` takes a
member's link down.  `stop`/`start` end and restart one member's process.

`etcd_cluster()` removes exactly what it created (processes by PID, the namespaces, which also
takes the veths and the bridge with them) even when the test fails.  Commands run by argv with
timeouts; traffic stays inside the namespaces.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from reconciler.coord.etcd import EtcdClient, EtcdError
from reconciler.netlink import run_in_netns

T = TypeVar("T")

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ROLES = ("mx1", "mx2", "wit")
CLIENT_PORT = 2379
PEER_PORT = 2380


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=20, capture_output=True, text=True)


@dataclass
class Member:
    role: str
    ns: str
    addr: str
    veth: str
    data: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.addr}:{CLIENT_PORT}"


@dataclass
class EtcdCluster:
    tag: str
    bridge_ns: str
    tmp: Path
    members: dict[str, Member] = field(default_factory=dict)
    config: Callable[[str], dict[str, str]] | None = None  # role -> ETCD_* variables, instead of flags
    flags: tuple[str, ...] = ()  # more etcd flags for every member
    tls: dict[str, str] = field(default_factory=dict)  # EtcdClient's ca_file, cert_file, key_file (https members)

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members.values()]

    def initial_cluster(self) -> str:
        return ",".join(f"{m.role}=http://{m.addr}:{PEER_PORT}" for m in self.members.values())

    def start(self, role: str, state: str = "existing") -> None:
        m = self.members[role]
        if self.config is not None:  # the member's environment file, as etcd.service would read it
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **self.config(role), "ETCD_DATA_DIR": str(m.data)}
            if state == "existing":
                env["ETCD_INITIAL_CLUSTER_STATE"] = "existing"
            with open(m.log, "ab") as log:
                m.proc = subprocess.Popen(["ip", "netns", "exec", m.ns, ETCD], stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=log, env=env, start_new_session=True)
            return
        argv = ["ip", "netns", "exec", m.ns, ETCD, "--name", role, "--data-dir", str(m.data),
                "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
                "--listen-peer-urls", f"http://{m.addr}:{PEER_PORT}",
                "--initial-advertise-peer-urls", f"http://{m.addr}:{PEER_PORT}",
                "--initial-cluster", self.initial_cluster(), "--initial-cluster-state", state,
                "--initial-cluster-token", f"rct-{self.tag}", "--pre-vote=true", "--log-outputs", "stderr", *self.flags]
        with open(m.log, "ab") as log:
            m.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

    def stop(self, role: str, sig: int = signal.SIGTERM) -> None:
        m = self.members[role]
        if m.proc is None:
            return
        if m.proc.poll() is None:
            os.killpg(m.proc.pid, sig)
            try:
                m.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(m.proc.pid, signal.SIGKILL)
                m.proc.wait(timeout=20)
        m.proc = None

    def pause(self, role: str) -> None:
        m = self.members[role]
        assert m.proc is not None
        os.killpg(m.proc.pid, signal.SIGSTOP)

    def resume(self, role: str) -> None:
        m = self.members[role]
        assert m.proc is not None
        os.killpg(m.proc.pid, signal.SIGCONT)

    def client(self, *roles: str, timeout: float = 2.0) -> EtcdClient:
        """A client of the given members (all three when none is named); use it through `run`."""
        return EtcdClient([self.members[r].url for r in (roles or ROLES)], timeout=timeout, **self.tls)

    def run(self, role: str, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` in `role`'s namespace: sockets it opens see the world as that member does."""
        return run_in_netns(self.members[role].ns, fn, *args)

    def cut(self, a: str, b: str) -> None:
        ma, mb = self.members[a], self.members[b]
        _ip("-n", ma.ns, "route", "add", "blackhole", f"{mb.addr}/32")
        _ip("-n", mb.ns, "route", "add", "blackhole", f"{ma.addr}/32")

    def heal(self, a: str, b: str) -> None:
        ma, mb = self.members[a], self.members[b]
        _ip("-n", ma.ns, "route", "del", "blackhole", f"{mb.addr}/32")
        _ip("-n", mb.ns, "route", "del", "blackhole", f"{ma.addr}/32")

    def wait_healthy(self, timeout: float = 30.0) -> float:
        """Seconds until a linearizable read succeeds through every member."""
        t0 = time.monotonic()
        pending = list(self.members)
        last = ""
        while pending:
            role = pending[0]
            try:
                self.run(role, self.client(role, timeout=1.0).get, "/health-probe")
                pending.pop(0)
                continue
            except EtcdError as e:
                last = str(e)
            if time.monotonic() - t0 > timeout:
                logs = {r: self.members[r].log.read_text(errors="replace")[-800:] for r in pending}
                raise AssertionError(f"etcd member {role} not healthy within {timeout:.0f} s: {last}; logs: {logs}")
            time.sleep(0.1)
        return time.monotonic() - t0


@contextmanager
def etcd_cluster(tmp: Path, config: Callable[[str], dict[str, str]] | None = None,
                 flags: tuple[str, ...] = (), tls: dict[str, str] | None = None) -> Iterator[EtcdCluster]:
    """Three members up and healthy; everything removed afterwards.  `config`: each member's
    ETCD_* environment (e.g. from `reconciler etcd-config`) instead of the flags used here."""
    tag = uuid.uuid4().hex[:6]
    c = EtcdCluster(tag, f"rce-{tag}-br", tmp, config=config, flags=flags, tls=tls or {})
    created: list[str] = []
    try:
        _ip("netns", "add", c.bridge_ns)
        created.append(c.bridge_ns)
        _ip("-n", c.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", c.bridge_ns, "link", "set", "br0", "up")
        for i, role in enumerate(ROLES, start=1):
            ns = f"rce-{tag}-{role}"
            _ip("netns", "add", ns)
            created.append(ns)
            m = Member(role, ns, f"10.77.0.{i}", f"re{tag}{i}", tmp / f"etcd-{role}", tmp / f"etcd-{role}.log",
                       scheme="https" if tls else "http")
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", m.veth, "netns", c.bridge_ns)
            _ip("-n", c.bridge_ns, "link", "set", m.veth, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{m.addr}/24", "dev", "eth0")
            for dev in ("eth0", "lo"):
                _ip("-n", ns, "link", "set", dev, "up")
            c.members[role] = m
        for role in ROLES:
            c.start(role, "new")
        c.wait_healthy()
        yield c
    finally:
        for role in list(c.members):
            try:
                c.resume(role)
            except (AssertionError, ProcessLookupError):
                pass
            c.stop(role, signal.SIGKILL)
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], timeout=20, capture_output=True)
