"""Execute the address actions: add, adopt and remove floating IPs, set promote_secondaries.

All address changes go as pipelined raw netlink messages on one socket (see
`reconciler.netlink`), every one stamped with IFA_PROTO = `TAG`.  Removal and adoption
re-read the interface in the same call: an address without our tag is never removed, and a
subnet's primary is never removed while that would make the kernel drop its secondaries.
Just before addresses are deleted, the TCP connections on them are reset, so that their
clients reconnect (to the new Primary) instead of waiting on a dead connection.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from reconciler.address import Address
from reconciler.netlink import (
    IFA_ADDRESS,
    IFA_BROADCAST,
    IFA_F_NODAD,
    IFA_F_SECONDARY,
    IFA_FLAGS,
    IFA_LOCAL,
    IFA_PROTO,
    IFA_PROTO_RECONCILER,
    IFA_RT_PRIORITY,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    RTM_DELADDR,
    RTM_NEWADDR,
    AddrInfo,
    Netlink,
    check_ifname,
    ifaddrmsg,
    pack_attr,
    run_in_netns,
)
from reconciler.observe.net import dump_links_and_addrs, parse_memo, read_promote_secondaries
from reconciler.sockdiag import reset_connections

# The ownership tag (IFA_PROTO, u8): 0x9d = 157.  See reconciler.netlink.IFA_PROTO_RECONCILER.
TAG = IFA_PROTO_RECONCILER
# Flags an adopted IPv6 address keeps: RTM_NEWADDR+REPLACE rewrites these from the request.
_KEEP_V6_FLAGS = 0x10 | 0x100 | 0x200  # HOMEADDRESS, MANAGETEMPADDR, NOPREFIXROUTE


@dataclass
class NetResult:
    """What one call did.  `unchanged` covers EEXIST on add and 'already absent' on remove."""

    op: str
    iface: str
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (address, why refused)
    failed: list[tuple[str, int, str]] = field(default_factory=list)  # (address, errno, text)
    error: str | None = None  # the whole call failed (no such interface, namespace, ...)
    reset: int = 0  # TCP connections on removed addresses reset first (see reconciler.sockdiag)
    warnings: list[str] = field(default_factory=list)  # did not stop the call

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed and not self.skipped

    def summary(self) -> str:
        if self.error:
            return f"{self.op} on {self.iface}: {self.error}"
        text = (
            f"{self.op} on {self.iface}: {len(self.changed)} changed, {len(self.unchanged)} unchanged, "
            f"{len(self.skipped)} refused, {len(self.failed)} failed"
        )
        if self.reset:
            text += f", {self.reset} TCP connection(s) on them reset"
        return text + "".join(f"; {w}" for w in self.warnings)


def check_items(items: Iterable[Address]) -> list[Address]:
    """De-duplicate `items`, refusing anything but unicast addresses."""
    out: dict[Address, None] = {}
    for a in items:
        if not isinstance(a, Address):
            raise TypeError(f"expected an Address (see reconciler.address.parse), got {a!r}")
        if not a.unicast:
            raise ValueError(f"not a unicast address: {a.text!r}")
        out[a] = None
    return list(out)


def addr_body(
    ifindex: int,
    ip: Address,
    *,
    flags: int = 0,
    tag: int | None = None,
    rt_priority: int | None = None,
    broadcast: bool = False,
) -> bytes:
    """ifaddrmsg + attributes for RTM_NEWADDR / RTM_DELADDR of one address (pure).

    IFA_ADDRESS is always sent, so a delete matches the prefix length exactly.
    """
    v4 = ip.version == 4
    family = socket.AF_INET if v4 else socket.AF_INET6
    raw = ip.packed
    body = ifaddrmsg(family, ip.prefix, ifindex) + pack_attr(IFA_ADDRESS, raw)
    if v4:
        body += pack_attr(IFA_LOCAL, raw)
        if broadcast and ip.prefix <= 30:  # like `brd +`
            body += pack_attr(IFA_BROADCAST, ip.broadcast.to_bytes(4, "big"))
    if flags:
        body += pack_attr(IFA_FLAGS, struct.pack("=I", flags))
    if rt_priority:
        body += pack_attr(IFA_RT_PRIORITY, struct.pack("=I", rt_priority))
    if tag is not None:
        body += pack_attr(IFA_PROTO, bytes([tag]))
    return body


def _new_body(ifindex: int, ip: Address, flags: int, rt_priority: int | None = None) -> bytes:
    return addr_body(ifindex, ip, flags=flags, tag=TAG, rt_priority=rt_priority, broadcast=True)


def _record(result: NetResult, ips: list[Address], replies: list[tuple[int, str]], benign: int) -> None:
    for ip, (code, text) in zip(ips, replies):
        if code == 0:
            result.changed.append(ip.text)
        elif code == benign:
            result.unchanged.append(ip.text)
        else:
            result.failed.append((ip.text, code, f"{os.strerror(code)} {text}".strip()))


def _ifindex(iface: str) -> int | None:
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        return None


def _add_here(iface: str, ips: list[Address]) -> NetResult:
    result = NetResult("add_addresses", iface)
    index = _ifindex(iface)
    if index is None:
        result.error = f"no interface {iface}"
        return result
    # IPv6 with NODAD: a floating address must be usable at once, and must not end up
    # permanently `dadfailed` because the peer still held it for a moment.
    flags = {4: 0, 6: IFA_F_NODAD}
    reqs = [(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, _new_body(index, ip, flags[ip.version])) for ip in ips]
    with Netlink() as nl:
        _record(result, ips, nl.transact(reqs), errno.EEXIST)
    return result


def _present(nl: Netlink, iface: str) -> tuple[int | None, dict[Address, AddrInfo]]:
    links, addrs = dump_links_and_addrs(nl, [iface], parse_memo())
    index = next((link.index for link in links if link.name == iface), None)
    return index, {a.address: a for a in addrs if a.index == index}


def _adopt_here(iface: str, ips: list[Address]) -> NetResult:
    result = NetResult("adopt_addresses", iface)
    with Netlink() as nl:
        index, present = _present(nl, iface)
        if index is None:
            result.error = f"no interface {iface}"
            return result
        todo, reqs = [], []
        for ip in ips:
            cur = present.get(ip)
            if cur is not None and cur.proto == TAG:
                result.unchanged.append(ip.text)
                continue
            flags = IFA_F_NODAD if ip.version == 6 else 0
            if cur is not None and ip.version == 6:
                flags = (cur.flags & _KEEP_V6_FLAGS) | IFA_F_NODAD
            prio = cur.rt_priority if cur is not None else None
            todo.append(ip)
            reqs.append((RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, _new_body(index, ip, flags, prio)))
        _record(result, todo, nl.transact(reqs), -1)
    return result


def _secondaries_by_subnet(present: dict[Address, AddrInfo]) -> dict[tuple[int, int], list[str]]:
    """IPv4 secondaries (text) grouped by (network, prefix length): what a primary's removal drops."""
    groups: dict[tuple[int, int], list[str]] = {}
    for a in present.values():
        if a.family == socket.AF_INET and a.flags & IFA_F_SECONDARY:
            groups.setdefault((a.address.network, a.prefixlen), []).append(a.address.text)
    return groups


def _classify_removals(
    ips: list[Address], present: dict[Address, AddrInfo], result: NetResult
) -> tuple[list[Address], list[Address]]:
    """Split owned, present addresses into (IPv4 secondaries, the rest); refuse the others."""
    secondaries, rest = [], []
    for ip in ips:
        cur = present.get(ip)
        if cur is None:
            result.unchanged.append(ip.text)
        elif cur.proto != TAG:
            tag = "unset" if cur.proto is None else str(cur.proto)
            result.skipped.append((ip.text, f"not owned by reconciler (IFA_PROTO {tag}): left alone"))
        elif ip.version == 4 and cur.flags & IFA_F_SECONDARY:
            secondaries.append(ip)
        else:
            rest.append(ip)
    return secondaries, rest


def _delete(nl: Netlink, index: int, ips: list[Address], result: NetResult) -> None:
    if not ips:
        return
    # While the address is still here, so the resets reach the clients (reconciler.sockdiag).
    n, problems = reset_connections(ips)
    result.reset += n
    result.warnings += [p for p in problems if p not in result.warnings]
    reqs = [(RTM_DELADDR, 0, addr_body(index, ip)) for ip in ips]
    _record(result, ips, nl.transact(reqs), errno.EADDRNOTAVAIL)


def _remove_here(iface: str, ips: list[Address]) -> NetResult:
    result = NetResult("remove_addresses", iface)
    with Netlink() as nl:
        index, present = _present(nl, iface)
        if index is None:
            result.error = f"no interface {iface}"
            return result
        promote = bool(read_promote_secondaries(iface))
        secondaries, rest = _classify_removals(ips, present, result)
        # Secondaries first: deleting their primary first would take them along (or promote one).
        _delete(nl, index, secondaries, result)
        gone = set(result.changed) | set(result.unchanged)
        groups = {} if promote else _secondaries_by_subnet(present)
        todo = []
        for ip in rest:
            # The kernel drops a primary's secondaries with it unless promote_secondaries is on.
            group = groups.get((ip.network, ip.prefix), []) if ip.version == 4 else []
            victims = [x for x in group if x not in gone]
            if victims:
                why = (
                    f"removing this primary would make the kernel delete {len(victims)} other "
                    f"address(es) of its subnet, e.g. {victims[0]}; set promote_secondaries first"
                )
                result.skipped.append((ip.text, why))
            else:
                todo.append(ip)
        _delete(nl, index, todo, result)
    return result


def _set_promote_here(iface: str) -> NetResult:
    result = NetResult("set_promote_secondaries", iface)
    path = f"/proc/sys/net/ipv4/conf/{iface}/promote_secondaries"
    try:
        with open(path, "r+", encoding="ascii") as f:
            if f.read().strip() == "1":
                result.unchanged.append(iface)
                return result
            f.seek(0)
            f.write("1\n")
    except FileNotFoundError:
        result.error = f"no IPv4 configuration for interface {iface} ({path} missing)"
    except OSError as exc:
        result.failed.append((iface, exc.errno or 0, f"{path}: {exc.strerror}"))
    else:
        result.changed.append(iface)
    return result


def _run(op: str, fn: Callable[..., NetResult], iface: str, netns: str | None, *args: object) -> NetResult:
    try:
        return run_in_netns(netns, fn, iface, *args)
    except OSError as exc:
        return NetResult(op, iface, error=f"{exc.strerror or exc}" + (f" (netns {netns})" if netns else ""))


def add_addresses(iface: str, items: Iterable[Address], netns: str | None = None) -> NetResult:
    """Add `items` tagged as ours (IPv6 with NODAD: usable at once); EEXIST counts as unchanged."""
    return _run("add_addresses", _add_here, check_ifname(iface), netns, check_items(items))


def adopt_addresses(iface: str, items: Iterable[Address], netns: str | None = None) -> NetResult:
    """Tag existing untagged `items` as ours in place (NLM_F_REPLACE: the address never goes away)."""
    return _run("adopt_addresses", _adopt_here, check_ifname(iface), netns, check_items(items))


def remove_addresses(iface: str, items: Iterable[Address], netns: str | None = None) -> NetResult:
    """Remove owned `items`, IPv4 secondaries first; untagged ones and cascading primaries are refused."""
    return _run("remove_addresses", _remove_here, check_ifname(iface), netns, check_items(items))


def set_promote_secondaries(iface: str, netns: str | None = None) -> NetResult:
    """net.ipv4.conf.IFACE.promote_secondaries = 1, so removing a primary promotes a secondary."""
    return _run("set_promote_secondaries", _set_promote_here, check_ifname(iface), netns)
