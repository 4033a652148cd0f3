"""TCP connections on floating addresses that are about to go away: find them, reset them.

Once an address is deleted, a connection bound to it can send nothing more: not the reply
to a request in flight, not the FIN of a process that closes it, not even a reset.  The
client keeps waiting (libpq's default TCP keepalive gives up after two hours) while the
address is already serving from the other node.  So, just before deleting addresses, the
executor resets the connections on them with SOCK_DESTROY (Linux >= 4.5 with
CONFIG_INET_DIAG_DESTROY, as Debian builds it): the kernel sends an RST to the client,
which reconnects at once and reaches the new Primary; the local process sees
ECONNABORTED.  Listening sockets are left alone.

One sock_diag dump per address family, filtered here; one SOCK_DESTROY per match, pipelined
on the same socket.  The codec is pure and tested on bytes; the socket part on a real
kernel in network namespaces.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Iterable
from typing import NamedTuple

from reconciler.address import Address
from reconciler.netlink import Netlink, iter_messages

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY, SOCK_DESTROY = 20, 21

# TCP states (include/net/tcp_states.h); the ones whose peer is waiting on this end.
TCP_ESTABLISHED, TCP_SYN_SENT, TCP_SYN_RECV, TCP_FIN_WAIT1, TCP_FIN_WAIT2 = 1, 2, 3, 4, 5
TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_LISTEN, TCP_CLOSING = 8, 9, 10, 11
RESET_STATES = (TCP_ESTABLISHED, TCP_SYN_SENT, TCP_SYN_RECV, TCP_FIN_WAIT1, TCP_FIN_WAIT2,
                TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING)

# struct inet_diag_sockid: sport, dport (big-endian), src[16], dst[16], if, cookie[2]
_SOCKID = struct.Struct("!HH16s16s")
_TAIL = struct.Struct("=I8s")  # idiag_if, idiag_cookie (host order, opaque)
_REQ_HEAD = struct.Struct("=BBBxI")  # family, protocol, ext, pad, states
_MSG_HEAD = struct.Struct("=BBBB")  # family, state, timer, retrans


class TcpConn(NamedTuple):
    family: int
    state: int
    local: str  # canonical address text, no prefix length
    local_port: int
    remote: str
    remote_port: int
    ifindex: int
    cookie: bytes  # 8 bytes: the kernel's identity of this socket, echoed back in SOCK_DESTROY


def _addr_bytes(family: int, text: str) -> bytes:
    return socket.inet_pton(family, text).ljust(16, b"\0")


def _addr_text(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return ipaddress.IPv6Address(raw).compressed


def state_mask(states: Iterable[int]) -> int:
    mask = 0
    for s in states:
        mask |= 1 << s
    return mask


def diag_request(family: int, states: Iterable[int], conn: TcpConn | None = None) -> bytes:
    """struct inet_diag_req_v2 for TCP: a dump of `family` (conn None) or exactly `conn`."""
    head = _REQ_HEAD.pack(family, socket.IPPROTO_TCP, 0, state_mask(states))
    if conn is None:
        return head + _SOCKID.pack(0, 0, b"", b"") + _TAIL.pack(0, b"\xff" * 8)  # INET_DIAG_NOCOOKIE
    sockid = _SOCKID.pack(conn.local_port, conn.remote_port, _addr_bytes(family, conn.local),
                          _addr_bytes(family, conn.remote))
    return head + sockid + _TAIL.pack(conn.ifindex, conn.cookie)


def parse_diag_dump(data: bytes) -> list[TcpConn]:
    """Every struct inet_diag_msg in a SOCK_DIAG_BY_FAMILY dump (pure)."""
    out = []
    for mtype, _flags, _seq, start, end in iter_messages(data):
        if mtype != SOCK_DIAG_BY_FAMILY or end - start < _MSG_HEAD.size + _SOCKID.size + _TAIL.size:
            continue
        family, state, _timer, _retrans = _MSG_HEAD.unpack_from(data, start)
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        sport, dport, src, dst = _SOCKID.unpack_from(data, start + 4)
        ifindex, cookie = _TAIL.unpack_from(data, start + 4 + _SOCKID.size)
        out.append(TcpConn(family, state, _addr_text(family, src), sport, _addr_text(family, dst), dport,
                           ifindex, cookie))
    return out


def _host(version: int, value: int) -> tuple[int, int]:
    """(version, value) of an address, an IPv4-mapped IPv6 one (::ffff:a.b.c.d) as IPv4."""
    if version == 6 and value >> 32 == 0xFFFF:
        return 4, value & 0xFFFFFFFF
    return version, value


def _conn_host(c: TcpConn) -> tuple[int, int]:
    raw = socket.inet_pton(c.family, c.local)
    return _host(4 if c.family == socket.AF_INET else 6, int.from_bytes(raw, "big"))


def connections_on(locals_: Iterable[Address]) -> list[TcpConn]:
    """The TCP connections (not listeners) in this network namespace whose local address is
    one of `locals_` (whatever their prefix lengths).  IPv4 clients of a dual-stack socket
    show as IPv4-mapped IPv6 addresses and are matched too."""
    wanted = {_host(a.version, a.value) for a in locals_}
    if not wanted:
        return []
    found = []
    with Netlink(protocol=NETLINK_SOCK_DIAG) as nl:
        for family in (socket.AF_INET, socket.AF_INET6):
            data = nl.dump(SOCK_DIAG_BY_FAMILY, diag_request(family, RESET_STATES))
            for c in parse_diag_dump(data):
                if _conn_host(c) in wanted:
                    found.append(c)
    return found


def reset_connections(locals_: Iterable[Address]) -> tuple[int, list[str]]:
    """Reset every connection on `locals_` (see the module's docstring).

    Returns (how many were reset, problems); a socket that closed meanwhile is not a problem.
    Never raises for a kernel without SOCK_DESTROY: that is reported once as a problem.
    """
    try:
        conns = connections_on(locals_)
        if not conns:
            return 0, []
        with Netlink(protocol=NETLINK_SOCK_DIAG) as nl:
            replies = nl.transact([(SOCK_DESTROY, 0, diag_request(c.family, RESET_STATES, c)) for c in conns])
    except OSError as exc:
        return 0, [f"could not list or reset TCP connections: {exc.strerror or exc}"]
    done, problems = 0, []
    for c, (code, text) in zip(conns, replies):
        if code == 0:
            done += 1
        elif code == errno.EOPNOTSUPP:
            return done, ["this kernel cannot reset sockets (CONFIG_INET_DIAG_DESTROY off): clients of the "
                          "removed addresses wait for their own timeouts"]
        elif code != errno.ENOENT:
            problems.append(f"reset {c.local}:{c.local_port} <- {c.remote}:{c.remote_port}: "
                            f"{errno.errorcode.get(code, code)} {text}".strip())
    return done, problems

