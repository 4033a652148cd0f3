"""Connections on a removed floating address are reset first (reconciler.sockdiag), so that a
client with a request in flight learns at once instead of waiting on a dead connection.

Real kernel: a server in one namespace listening on all addresses (as PostgreSQL does with
listen_addresses='*'), a client in the other, over a veth pair (tests/netns_pair.py).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from reconciler.address import Address, parse
from reconciler.execute.net import add_addresses, remove_addresses
from reconciler.netlink import RTM_NEWADDR, iter_messages, pack_msg, run_in_netns
from reconciler.sockdiag import (
    SOCK_DIAG_BY_FAMILY,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    TcpConn,
    _conn_host,
    _host,
    connections_on,
    diag_request,
    parse_diag_dump,
    state_mask,
)
from tests.conftest import need_netns
from tests.netns_pair import Pair, ip, veth_pair

VIP, FIXED, CLIENT = "10.71.0.100", "10.71.0.2", "10.71.0.9"


def addrs(texts: list[str]) -> list[Address]:
    return [parse(t) for t in texts]


@pytest.fixture
def pair() -> Iterator[Pair]:
    need_netns()
    with veth_pair() as p:
        ip("-n", p.ns_a, "addr", "add", f"{FIXED}/24", "dev", p.a)  # the node's own address
        ip("-n", p.ns_b, "addr", "add", f"{CLIENT}/24", "dev", p.b)
        assert add_addresses(p.a, addrs([f"{VIP}/24"]), netns=p.ns_a).ok
        yield p


class Rig:
    """Server (ns_a, listening on 0.0.0.0) with one accepted connection per target address."""

    def __init__(self, p: Pair, stack: ExitStack) -> None:
        self.listener = run_in_netns(p.ns_a, socket.socket)
        stack.callback(self.listener.close)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("0.0.0.0", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.clients: dict[str, socket.socket] = {}
        self.served: dict[str, socket.socket] = {}
        self.p, self.stack = p, stack

    def connect(self, addr: str) -> None:
        c = run_in_netns(self.p.ns_b, socket.socket)
        self.stack.callback(c.close)
        c.settimeout(5)
        c.connect((addr, self.port))
        s, _ = self.listener.accept()
        self.stack.callback(s.close)
        self.clients[addr], self.served[addr] = c, s


def _wait_for_reply(c: socket.socket, timeout: float) -> str:
    c.settimeout(timeout)
    try:
        data = c.recv(100)
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "still waiting"
    return f"data {data!r}" if data else "eof"


def test_removal_resets_the_connections_on_that_address_only(pair: Pair) -> None:
    with ExitStack() as stack:
        rig = Rig(pair, stack)
        rig.connect(VIP)
        rig.connect(FIXED)
        rig.clients[VIP].sendall(b"INSERT ...")  # a request in flight: the server has not answered
        assert rig.served[VIP].recv(100) == b"INSERT ..."
        found = run_in_netns(pair.ns_a, connections_on, addrs([f"{VIP}/24"]))
        assert [(c.local, c.local_port, c.state) for c in found] == [(VIP, rig.port, TCP_ESTABLISHED)]

        t0 = time.monotonic()
        res = remove_addresses(pair.a, addrs([f"{VIP}/24"]), netns=pair.ns_a)
        assert res.ok and res.changed == [f"{VIP}/24"] and res.reset == 1 and not res.warnings
        assert "1 TCP connection(s) on them reset" in res.summary()
        assert _wait_for_reply(rig.clients[VIP], 5.0) == "reset"
        assert time.monotonic() - t0 < 5.0
        # the server's side is gone too: its process sees the abort, not a hang on send
        with pytest.raises(OSError):
            rig.served[VIP].send(b"reply")
        # the node's own address and the listener are untouched
        rig.served[FIXED].sendall(b"pong")
        assert _wait_for_reply(rig.clients[FIXED], 5.0) == "data b'pong'"
        rig.connect(FIXED)


def test_without_the_reset_the_client_waits_on_a_dead_connection(pair: Pair) -> None:
    # The control that shows the test above can fail: `ip addr del` (as a hand-written
    # failover script does) leaves the client waiting for a reply that cannot come.
    with ExitStack() as stack:
        rig = Rig(pair, stack)
        rig.connect(VIP)
        rig.clients[VIP].sendall(b"INSERT ...")
        assert rig.served[VIP].recv(100) == b"INSERT ..."
        ip("-n", pair.ns_a, "addr", "del", f"{VIP}/24", "dev", pair.a)
        rig.served[VIP].send(b"reply")  # queued, but it can never leave: no source address
        rig.served[VIP].close()  # nor the FIN
        assert _wait_for_reply(rig.clients[VIP], 2.0) == "still waiting"


def test_nothing_to_reset_and_absent_addresses(pair: Pair) -> None:
    res = remove_addresses(pair.a, addrs([f"{VIP}/24", "10.71.0.101/24"]), netns=pair.ns_a)
    assert res.ok and res.reset == 0 and res.unchanged == ["10.71.0.101/24"]
    assert run_in_netns(pair.ns_a, connections_on, addrs([])) == []


# --- codec (pure) -----------------------------------------------------------------------------


def test_request_layout_and_state_mask() -> None:
    req = diag_request(socket.AF_INET, [TCP_ESTABLISHED])
    assert len(req) == 56  # sizeof(struct inet_diag_req_v2)
    assert req[:8] == struct.pack("=BBBxI", socket.AF_INET, socket.IPPROTO_TCP, 0, 1 << TCP_ESTABLISHED)
    assert req[-8:] == b"\xff" * 8  # INET_DIAG_NOCOOKIE on a dump
    assert state_mask([TCP_LISTEN, TCP_ESTABLISHED]) == (1 << 10) | (1 << 1)
    conn = TcpConn(socket.AF_INET6, TCP_ESTABLISHED, "2001:db8::1", 5432, "2001:db8::9", 40000, 3, b"12345678")
    one = diag_request(socket.AF_INET6, [TCP_ESTABLISHED], conn)
    assert one[8:12] == struct.pack("!HH", 5432, 40000)
    assert one[12:28] == socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    assert one[-12:] == struct.pack("=I", 3) + b"12345678"
    # an IPv4 client of a dual-stack listener shows as IPv4-mapped: it matches the IPv4 address
    mapped = TcpConn(socket.AF_INET6, TCP_ESTABLISHED, "::ffff:10.0.0.5", 25, "::ffff:10.0.0.9", 1234, 3, b"12345678")
    assert _conn_host(mapped) == _host(*parse("10.0.0.5/24").host) == (4, 0x0A000005)
    assert _host(*parse("::ffff:10.0.0.5/128").host) == (4, 0x0A000005)
    assert _conn_host(conn) == _host(*parse("2001:DB8::1/64").host) == (6, 0x20010DB8 << 96 | 1)


def test_parse_dump_skips_other_messages_and_reads_both_families() -> None:
    def msg(family: int, state: int, src: str, sport: int, dst: str, dport: int) -> bytes:
        pad = lambda a: socket.inet_pton(family, a).ljust(16, b"\0")  # noqa: E731
        body = (struct.pack("=BBBB", family, state, 0, 0) + struct.pack("!HH", sport, dport) + pad(src) + pad(dst)
                + struct.pack("=I", 7) + b"cookie!!" + struct.pack("=5I", 0, 0, 0, 0, 0))
        return pack_msg(SOCK_DIAG_BY_FAMILY, 2, 1, body)

    data = (msg(socket.AF_INET, 1, "10.0.0.5", 5432, "10.0.0.9", 41000) + pack_msg(RTM_NEWADDR, 2, 1, b"\0" * 8)
            + msg(socket.AF_INET6, 8, "::ffff:10.0.0.5", 25, "2001:db8::9", 1234))
    assert len(list(iter_messages(data))) == 3
    got = parse_diag_dump(data)
    assert got == [
        TcpConn(socket.AF_INET, 1, "10.0.0.5", 5432, "10.0.0.9", 41000, 7, b"cookie!!"),
        TcpConn(socket.AF_INET6, 8, "::ffff:a00:5", 25, "2001:db8::9", 1234, 7, b"cookie!!"),
    ]
