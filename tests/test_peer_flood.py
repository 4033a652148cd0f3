"""The peer server under a connection flood, between two network namespaces made here.

ns_a holds the server, in a child process whose RLIMIT_NOFILE is lowered to 1024 (the usual
default), at SERVER; ns_b holds the real peer at PEER and a stranger at STRANGER, on the same
veth.  The flood: 2,000 slow connections (half silent, half sending a partial request a byte
at a time), 1,000 from the stranger and 1,000 from ns_a itself (this host: the bound address
and 127.0.0.1, which are allowed, so the per-source cap is what stops them); each one the
server closes is reopened a second later, for as long as the flood lasts.  While it lasts,
the real client (`fetch_peer`, 1 s timeout) fetches from PEER, and the child runs
`_cmd.run(["/bin/true"])` every 0.2 s.  Traffic stays inside the two namespaces; the flood is
bounded in sockets (2,000), in opens (40,000) and in time; sockets, threads, the child and the
namespaces are released in `finally`.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from reconciler.model import NodeObservation
from reconciler.netlink import run_in_netns
from reconciler.peer import PeerServer, fetch_peer
from tests.conftest import need_netns
from tests.netns_pair import Pair, ip, veth_pair

pytestmark = pytest.mark.netns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = b"correct horse battery staple 0123"
SERVER, PEER, STRANGER = "10.171.0.1", "10.171.0.2", "10.171.0.3"
SNAPSHOT = NodeObservation(node="alpha", spec_digest="sha256:abc")

FLOOD_SOCKETS = 2000
MAX_OPENS = 40_000
REOPEN_S = 1.0
TRICKLE_S = 0.5
PARTIAL = b"GET /v1/observation HTTP/1.1\r\nHost: x\r\nAuthorization: HMAC " + b"a" * 200
FETCHES = 20
FLOOD_WINDOW_S = 8.0
CHILD_NOFILE = 1024

# The server side: started in ns_a by `ip netns exec`; prints READY <port>, probes until a
# line on stdin, then prints its measurements as one JSON line.
CHILD = r"""
import json, os, resource, sys, threading, time
host, peer, secret, nofile = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from reconciler import _cmd
from reconciler.model import NodeObservation
from reconciler.peer import PeerServer
snap = NodeObservation(node="alpha", spec_digest="sha256:abc")
srv = PeerServer(host, 0, secret, lambda: snap, peers=[peer])
srv.start()
probes = []
stop = threading.Event()
def probe():
    while not stop.wait(0.2):
        t = time.time()
        try:
            r = _cmd.run(["/bin/true"], timeout=5)
            err = None if r.ok else r.describe()
        except Exception as e:
            err = f"{type(e).__name__}: {e}"
        try:
            fds = len(os.listdir("/proc/self/fd"))
        except OSError:
            fds = -1
        probes.append({"t": t, "took": time.time() - t, "err": err, "fds": fds, "threads": threading.active_count()})
thread = threading.Thread(target=probe, daemon=True)
thread.start()
print("READY", srv.port, flush=True)
sys.stdin.readline()
stop.set()
thread.join(5)
print(json.dumps(probes), flush=True)
os._exit(0)
"""


@dataclass
class _Slot:
    ns: str
    source: str | None  # None: the kernel's choice
    trickle: bool
    sock: socket.socket | None = None
    sent: int = 0
    next_open: float = 0.0


@dataclass
class Flood:
    """Slow connections to `target`, reopened REOPEN_S after the server closes one."""

    target: tuple[str, int]
    slots: list[_Slot]
    opens: int = 0
    closed_by_server: int = 0
    answered: dict[str, int] = field(default_factory=dict)
    max_open: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for slot in self.slots:
            if slot.sock is not None:
                slot.sock.close()
                slot.sock = None

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(f"{type(e).__name__}: {e}")

    def _loop(self) -> None:
        poller = select.poll()
        by_fd: dict[int, _Slot] = {}
        last_trickle = 0.0

        def close(slot: _Slot, by_server: bool) -> None:
            assert slot.sock is not None
            poller.unregister(slot.sock)
            del by_fd[slot.sock.fileno()]
            slot.sock.close()
            slot.sock, slot.sent, slot.next_open = None, 0, time.monotonic() + REOPEN_S
            self.closed_by_server += by_server

        while not self._stop.is_set():
            now = time.monotonic()
            due = [s for s in self.slots if s.sock is None and s.next_open <= now]
            for ns in {s.ns for s in due}:
                group = [s for s in due if s.ns == ns][: MAX_OPENS - self.opens]
                socks = run_in_netns(ns, lambda n: [socket.socket() for _ in range(n)], len(group))
                for slot, sock in zip(group, socks, strict=True):
                    sock.setblocking(False)
                    if slot.source is not None:
                        sock.bind((slot.source, 0))
                    sock.connect_ex(self.target)
                    slot.sock = sock
                    by_fd[sock.fileno()] = slot
                    poller.register(sock, select.POLLIN)
                    self.opens += 1
            self.max_open = max(self.max_open, len(by_fd))
            if now - last_trickle >= TRICKLE_S:
                last_trickle = now
                for slot in self.slots:
                    if slot.trickle and slot.sock is not None and slot.sent < len(PARTIAL):
                        try:
                            slot.sent += slot.sock.send(PARTIAL[slot.sent : slot.sent + 1])
                        except (BlockingIOError, InterruptedError):
                            pass
                        except OSError as e:
                            if e.errno != errno.ENOTCONN:  # still connecting
                                close(slot, by_server=True)
            for fd, _ in poller.poll(50):
                slot = by_fd[fd]
                assert slot.sock is not None
                try:
                    data = slot.sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    key = slot.source or "default"
                    self.answered[key] = self.answered.get(key, 0) + 1
                close(slot, by_server=not data)


@contextmanager
def _server_child(pair: Pair) -> Iterator[tuple[subprocess.Popen[str], int]]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    argv = ["ip", "netns", "exec", pair.ns_a, sys.executable, "-c", CHILD, SERVER, PEER, SECRET.hex(), str(CHILD_NOFILE)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:1] == ["READY"], f"the server child did not start: {line}"
        yield proc, int(line[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@dataclass(frozen=True)
class Probe:
    t: float  # wall clock, as the child saw it
    took: float
    err: str | None  # why /bin/true did not run, or None
    fds: int  # open descriptors in the server process (-1: could not even list them)
    threads: int


def _finish(proc: subprocess.Popen[str]) -> list[Probe]:
    out, _ = proc.communicate("stop\n", timeout=20)
    return [Probe(**p) for p in json.loads(out.strip().splitlines()[-1])]


@contextmanager
def _fd_headroom(n: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f"the flood needs {n} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def pair() -> Iterator[Pair]:
    need_netns()
    with veth_pair() as p:
        ip("-n", p.ns_a, "addr", "add", f"{SERVER}/24", "dev", p.a)
        for addr in (PEER, STRANGER):  # PEER first: the source the kernel picks in ns_b
            ip("-n", p.ns_b, "addr", "add", f"{addr}/24", "dev", p.b)
        yield p


def _get_from(ns: str, source: str, port: int) -> bytes:
    def go() -> bytes:
        with socket.socket() as s:
            s.settimeout(2.0)
            s.bind((source, 0))
            try:  # the reset may come before connect() returns
                s.connect((SERVER, port))
                s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                return s.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                return b""

    return run_in_netns(ns, go)


def test_only_the_peer_and_this_host_are_answered(pair: Pair) -> None:
    def serve() -> PeerServer:
        srv = PeerServer(SERVER, 0, SECRET, lambda: SNAPSHOT, peers=[PEER])
        srv.start()
        return srv

    srv = run_in_netns(pair.ns_a, serve)  # its listening socket lives in ns_a
    try:
        assert _get_from(pair.ns_b, PEER, srv.port).startswith(b"HTTP/1.0 200")
        assert _get_from(pair.ns_a, SERVER, srv.port).startswith(b"HTTP/1.0 200"), "this host (bound address)"
        assert _get_from(pair.ns_b, STRANGER, srv.port) == b"", "a third address must get no answer"
        fetched = run_in_netns(pair.ns_b, fetch_peer, SERVER, srv.port, SECRET, 1.0)
        assert fetched.reachable, fetched.reason
    finally:
        srv.stop()


def test_flood_of_slow_connections_starves_neither_the_peer_nor_the_agent(pair: Pair) -> None:
    stranger = [_Slot(pair.ns_b, STRANGER, trickle=i % 2 == 0) for i in range(FLOOD_SOCKETS // 2)]
    local = [_Slot(pair.ns_a, None if i % 2 else "127.0.0.1", trickle=(i // 2) % 2 == 0) for i in range(FLOOD_SOCKETS // 2)]
    with _fd_headroom(FLOOD_SOCKETS + 1024), _server_child(pair) as (proc, port):
        flood = Flood((SERVER, port), stranger + local)
        fetches: list[tuple[bool, float, str | None]] = []
        try:
            flood.start()
            ramp = time.monotonic() + 10.0
            while flood.opens < FLOOD_SOCKETS and time.monotonic() < ramp:
                time.sleep(0.1)
            assert flood.opens >= FLOOD_SOCKETS, f"the flood opened only {flood.opens} connections in 10 s"
            window = (time.time(), time.monotonic() + FLOOD_WINDOW_S)
            for _ in range(FETCHES):
                t0 = time.monotonic()
                r = run_in_netns(pair.ns_b, fetch_peer, SERVER, port, SECRET, 1.0)
                fetches.append((r.reachable, time.monotonic() - t0, r.reason))
                time.sleep(0.2)
            while time.monotonic() < window[1]:
                time.sleep(0.1)
            window_end = time.time()
        finally:
            flood.stop()
        probes = _finish(proc)

    during = [p for p in probes if window[0] <= p.t <= window_end] or [Probe(0, 0, "no probe ran", -1, 0)]
    ok = [f for f in fetches if f[0]]
    failed_cmds = [p.err for p in during if p.err is not None]
    summary = (
        f"flood: {flood.opens} opens, {flood.max_open} open at once, {flood.closed_by_server} closed by the server, "
        f"answered {flood.answered}; fetches {len(ok)}/{len(fetches)} ok, slowest {max(f[1] for f in fetches):.3f} s; "
        f"/bin/true {len(during) - len(failed_cmds)}/{len(during)} ok, slowest {max(p.took for p in during):.3f} s; "
        f"server fds max {max(p.fds for p in during)}, threads max {max(p.threads for p in during)}"
    )
    print(summary)
    assert not flood.errors, flood.errors
    assert flood.max_open >= FLOOD_SOCKETS * 0.9, summary
    assert len(ok) == FETCHES, f"{summary}\nfailed fetches: {[f[2] for f in fetches if not f[0]][:5]}"
    assert len(during) >= FLOOD_WINDOW_S / 0.2 * 0.5, summary
    assert not failed_cmds, f"{summary}\n/bin/true failed: {failed_cmds[:3]}"
    assert STRANGER not in flood.answered, summary
    assert 0 < max(p.fds for p in during) < 100, summary
