"""Raw rtnetlink codec and socket for the address and link messages this tool needs.

Shared by `observe.net` (one RTM_GETADDR dump per read) and `execute.net` (pipelined
RTM_NEWADDR/RTM_DELADDR).  Messages are packed and parsed with `struct`: pyroute2 builds
an object per message and is ~25x slower at 10k addresses.  The `parse_*` functions are
pure functions of bytes, so they are tested on captured dumps.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import socket
import struct
import threading
from collections.abc import Callable, Container, Iterator, Sequence
from typing import NamedTuple, TypeVar

from reconciler.address import Address, from_packed

T = TypeVar("T")

# IFA_PROTO value stamped on every address this tool adds or adopts (Linux >= 5.18).
# 0-3 are the kernel's (unspec, kernel_lo, kernel_ra, kernel_ll); keepalived takes 18 or the
# first free id.  0x9d = 157 is unused by the kernel, iproute2's tables and keepalived.
IFA_PROTO_RECONCILER = 0x9D

NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP_INTR = 0x1, 0x2, 0x4, 0x10
NLM_F_DUMP, NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x300, 0x100, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST, IFA_FLAGS, IFA_RT_PRIORITY, IFA_PROTO = 1, 2, 3, 4, 8, 9, 11
IFA_F_SECONDARY, IFA_F_NODAD, IFA_F_TENTATIVE, IFA_F_DADFAILED = 0x01, 0x02, 0x40, 0x08
IFLA_ADDRESS, IFLA_IFNAME = 1, 3
IFF_UP, IFF_RUNNING = 0x1, 0x40
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NLMSGERR_ATTR_MSG = 1
CLONE_NEWNET = 0x40000000

_NLH = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFA = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_IFI = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTA = struct.Struct("=HH")  # len, type
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")

IFNAME_RE = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.@-]{1,15}$")
_NETNS_RE = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.-]{1,64}$")


class AddrInfo(NamedTuple):
    """One RTM_NEWADDR message; `address` is typed, made once from the message's bytes."""

    index: int  # type: ignore[assignment]  # the interface index, shadowing tuple.index
    family: int
    address: Address
    prefixlen: int
    scope: int
    flags: int  # IFA_FLAGS when present (32 bits), else ifa_flags
    proto: int | None  # IFA_PROTO; None when the address was added without one
    rt_priority: int | None


class LinkInfo(NamedTuple):
    index: int  # type: ignore[assignment]  # the interface index, shadowing tuple.index
    name: str
    flags: int
    mac: bytes


def check_ifname(name: str) -> str:
    if not isinstance(name, str) or not IFNAME_RE.match(name):
        raise ValueError(f"not a valid interface name: {name!r}")
    return name


# --- codec (pure) ---------------------------------------------------------------------------


def pack_attr(attr_type: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return _RTA.pack(length, attr_type) + payload + b"\0" * (-length % 4)


def pack_msg(msg_type: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLH.pack(16 + len(body), msg_type, flags, seq, 0) + body


def ifaddrmsg(family: int = 0, prefixlen: int = 0, index: int = 0, scope: int = 0) -> bytes:
    return _IFA.pack(family, prefixlen, 0, scope, index)


def ifinfomsg(index: int = 0) -> bytes:
    return _IFI.pack(0, 0, index, 0, 0)


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield (type, flags, seq, body_start, body_end) for each message in `data`."""
    off, end = 0, len(data)
    while off + 16 <= end:
        length, mtype, flags, seq, _pid = _NLH.unpack_from(data, off)
        if length < 16 or off + length > end:
            raise ValueError(f"truncated netlink message at offset {off}")
        yield mtype, flags, seq, off + 16, off + length
        off += (length + 3) & ~3


def parse_attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while start + 4 <= end:
        alen, atype = _RTA.unpack_from(data, start)
        if alen < 4:
            break
        out[atype & 0x3FFF] = data[start + 4 : start + alen]
        start += (alen + 3) & ~3
    return out


def parse_addr_dump(
    data: bytes, indexes: Container[int] | None = None, memo: AddrMemo | None = None
) -> list[AddrInfo]:
    """Every RTM_NEWADDR in `data` (a dump or a notification stream), all scopes.

    `indexes` limits the result to those interfaces.  Hand-inlined: this runs over every
    address of the host on each observation (10k addresses: ~25 ms).  With `memo`, a
    message byte-identical to one of the previous call's is not parsed again (~6 ms).
    """
    out: list[AddrInfo] = []
    seen: dict[bytes, AddrInfo | None] | None = None
    prev: dict[bytes, AddrInfo | None] = {}
    if memo is not None:
        seen, prev = {}, memo.last or {}
    ifa, rta, u32, nlh = _IFA.unpack_from, _RTA.unpack_from, _U32.unpack_from, _NLH.unpack_from
    off, total = 0, len(data)
    while off + 16 <= total:  # iter_messages, inlined
        length, _mtype = nlh(data, off)[:2]
        if length < 16 or off + length > total:
            raise ValueError(f"truncated netlink message at offset {off}")
        start, end = off + 16, off + length
        off += (length + 3) & ~3
        if _mtype != 20:  # RTM_NEWADDR
            continue
        family, plen, flags, scope, index = ifa(data, start)
        if indexes is not None and index not in indexes:
            continue
        if seen is not None:
            key = data[start:end]
            if key in prev:
                hit = prev[key]
                seen[key] = hit
                if hit is not None:
                    out.append(hit)
                continue
        local = address = None
        proto = prio = None
        pos = start + 8
        while pos + 4 <= end:
            alen, atype = rta(data, pos)
            if alen < 4:
                break
            if atype == 2:  # IFA_LOCAL (literals: no global lookups in the hot loop)
                local = data[pos + 4 : pos + alen]
            elif atype == 1:  # IFA_ADDRESS
                address = data[pos + 4 : pos + alen]
            elif atype == 8:  # IFA_FLAGS
                flags = u32(data, pos + 4)[0]
            elif atype == 11:  # IFA_PROTO
                proto = data[pos + 4]
            elif atype == 9:  # IFA_RT_PRIORITY
                prio = u32(data, pos + 4)[0]
            pos += (alen + 3) & ~3
        raw = local or address
        info = None
        if raw is not None and family in (socket.AF_INET, socket.AF_INET6):
            info = AddrInfo(index, family, from_packed(raw, plen), plen, scope, flags, proto, prio)
            out.append(info)
        if seen is not None:
            seen[data[start:end]] = info
    if memo is not None:
        memo.last = seen
    return out




class AddrMemo:
    """Parsed RTM_NEWADDR bodies of the previous dump, by their bytes (see parse_addr_dump).

    An address that did not change is byte-identical from one dump to the next (its
    cacheinfo timestamps move only when it is changed).  Holds the last dump's entries
    only, so it never outgrows the addresses actually present."""

    def __init__(self) -> None:
        self.last: dict[bytes, AddrInfo | None] | None = None


def parse_link_dump(data: bytes) -> list[LinkInfo]:
    out: list[LinkInfo] = []
    for mtype, _flags, _seq, start, end in iter_messages(data):
        if mtype != RTM_NEWLINK:
            continue
        _fam, _type, index, flags, _chg = _IFI.unpack_from(data, start)
        attrs = parse_attrs(data, start + 16, end)
        name = attrs.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode("utf-8", "replace")
        out.append(LinkInfo(index, name, flags, attrs.get(IFLA_ADDRESS, b"")))
    return out


def parse_error(data: bytes, start: int, end: int, flags: int) -> tuple[int, str]:
    """An NLMSG_ERROR body -> (errno, extended-ack message or '')."""
    err = -_I32.unpack_from(data, start)[0]
    if not flags & NLM_F_ACK_TLVS:
        return err, ""
    orig_len = _NLH.unpack_from(data, start + 4)[0]
    tlv = start + 4 + (16 if flags & NLM_F_CAPPED else (orig_len + 3) & ~3)
    msg = parse_attrs(data, tlv, end).get(NLMSGERR_ATTR_MSG, b"")
    return err, msg.split(b"\0", 1)[0].decode("utf-8", "replace")


def scan_dump_chunk(data: bytes, seq: int) -> tuple[bool, bool, tuple[int, str] | None]:
    """One received chunk of a dump: (NLMSG_DONE seen, NLM_F_DUMP_INTR seen, error or None)
    for the messages of request `seq`.  Headers only, inlined: it runs over every message."""
    nlh, off, total = _NLH.unpack_from, 0, len(data)
    done = intr = False
    while off + 16 <= total:
        length, mtype, flags, mseq, _pid = nlh(data, off)
        if length < 16 or off + length > total:
            raise ValueError(f"truncated netlink message at offset {off}")
        if mseq == seq:
            if flags & NLM_F_DUMP_INTR:
                intr = True
            if mtype == NLMSG_ERROR:
                return done, intr, parse_error(data, off + 16, off + length, flags)
            if mtype == NLMSG_DONE:
                done = True
        off += (length + 3) & ~3
    return done, intr, None


def dump_interrupted(data: bytes) -> bool:
    return any(flags & NLM_F_DUMP_INTR for _t, flags, _s, _a, _b in iter_messages(data))


# --- socket ---------------------------------------------------------------------------------


class Netlink:
    """One netlink socket (NETLINK_ROUTE unless `protocol` says otherwise), no multicast
    groups: requests and their replies only."""

    def __init__(self, timeout: float = 60.0, rcvbuf: int = 4 << 20, protocol: int = 0) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            try:
                self.sock.setsockopt(SOL_NETLINK, opt, 1)
            except OSError:
                pass
        self.sock.bind((0, 0))
        self.sock.settimeout(timeout)
        self._seq = 0
        self._buf = bytearray(1 << 20)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _recv(self) -> bytes:
        n = self.sock.recv_into(self._buf)
        return bytes(self._buf[:n])

    def dump(self, msg_type: int, body: bytes, retries: int = 10) -> bytes:
        """The whole dump as concatenated messages; re-dumped while NLM_F_DUMP_INTR is set."""
        for _ in range(retries):
            data, interrupted = self._dump_once(msg_type, body)
            if not interrupted:
                return data
        raise OSError(errno.EINTR, f"netlink dump of type {msg_type} kept changing; gave up")

    def _dump_once(self, msg_type: int, body: bytes) -> tuple[bytes, bool]:
        seq = self._next_seq()
        self.sock.send(pack_msg(msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, body))
        chunks: list[bytes] = []
        interrupted = False
        while True:
            data = self._recv()
            chunks.append(data)
            done, intr, error = scan_dump_chunk(data, seq)
            interrupted = interrupted or intr
            if error is not None:
                code, text = error
                raise OSError(code, f"netlink dump failed: {os.strerror(code)} {text}".strip())
            if done:
                return b"".join(chunks), interrupted

    def transact(
        self, requests: Sequence[tuple[int, int, bytes]], window: int = 256
    ) -> list[tuple[int, str]]:
        """Send (type, flags, body) requests with NLM_F_ACK, `window` per write.

        Returns (errno, kernel message) per request, in order; errno 0 is success.  The
        kernel handles the messages of one write in order, so ordering is preserved.
        """
        results: list[tuple[int, str]] = [(-1, "")] * len(requests)
        for first in range(0, len(requests), window):
            batch = requests[first : first + window]
            seqs: dict[int, int] = {}
            msgs = []
            for i, (mtype, flags, body) in enumerate(batch, first):
                seq = self._next_seq()
                seqs[seq] = i
                msgs.append(pack_msg(mtype, flags | NLM_F_REQUEST | NLM_F_ACK, seq, body))
            self.sock.send(b"".join(msgs))
            self._collect_acks(seqs, results)
        return results

    def _collect_acks(self, pending: dict[int, int], results: list[tuple[int, str]]) -> None:
        while pending:
            data = self._recv()
            for mtype, flags, seq, start, end in iter_messages(data):
                if mtype == NLMSG_ERROR and seq in pending:
                    results[pending.pop(seq)] = parse_error(data, start, end, flags)


# --- network namespaces ---------------------------------------------------------------------


def netns_path(netns: str) -> str:
    """'/run/netns/NAME' for a name as `ip netns` creates it; absolute paths are kept."""
    if netns.startswith("/"):
        return netns
    if not _NETNS_RE.match(netns):
        raise ValueError(f"not a valid network namespace name: {netns!r}")
    return f"/run/netns/{netns}"


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def run_in_netns(netns: str | None, fn: Callable[..., T], *args: object) -> T:
    """Run `fn(*args)` in network namespace `netns` (None: here, in the current one).

    setns(CLONE_NEWNET) only moves the calling thread, so a short-lived thread does the
    work and dies; sockets it creates stay in that namespace and may be used from anywhere.
    """
    if netns is None:
        return fn(*args)
    fd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    box: dict[str, object] = {}

    def target() -> None:
        try:
            _setns(fd)
            box["result"] = fn(*args)
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    try:
        thread = threading.Thread(target=target, name=f"netns:{netns}", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]
