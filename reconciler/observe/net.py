"""Observe interfaces and their addresses: one link dump and one RTM_GETADDR dump per read.

`read_interfaces` is the only I/O here (raw netlink plus the promote_secondaries sysctl);
`parse_interfaces` turns the parsed dumps into `InterfaceObs` and is pure.  Only
global-scope addresses are reported; `owned` means IFA_PROTO carries this tool's tag.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping

from reconciler.model import AddressObs, InterfaceObs
from reconciler.netlink import (
    IFA_F_SECONDARY,
    IFA_PROTO_RECONCILER,
    IFF_RUNNING,
    IFF_UP,
    RTM_GETADDR,
    RTM_GETLINK,
    AddrInfo,
    AddrMemo,
    LinkInfo,
    Netlink,
    check_ifname,
    ifaddrmsg,
    ifinfomsg,
    parse_addr_dump,
    parse_link_dump,
    run_in_netns,
)

RT_SCOPE_UNIVERSE = 0


class ObsMemo:
    """What repeated observations of a mostly unchanged address list can reuse: the parsed
    messages of the last dump (netlink.AddrMemo) and the `AddressObs` made from each of
    them (frozen, so shared safely).  Pure memoisation: every observation still dumps the
    kernel's state; nothing here is believed without it."""

    def __init__(self) -> None:
        self.addrs = AddrMemo()
        # id(message) -> (the message, the tag it was read with, its AddressObs).  The memo
        # above hands back the same AddrInfo object for an unchanged message, so its
        # identity is a key that costs no hashing; holding the object keeps the id its own.
        self.obs: dict[int, tuple[AddrInfo, int, AddressObs]] = {}


_MEMO = ObsMemo()  # pure memoisation: identical bytes parse alike, whichever namespace they came from


def parse_memo() -> AddrMemo:
    """The process's memo of parsed address messages; the executor's re-reads share it."""
    return _MEMO.addrs


def parse_interfaces(
    names: Iterable[str],
    links: Iterable[LinkInfo],
    addrs: Iterable[AddrInfo],
    promote: Mapping[str, bool | None],
    tag: int = IFA_PROTO_RECONCILER,
    memo: ObsMemo | None = None,
) -> dict[str, InterfaceObs]:
    """Build one `InterfaceObs` per requested name from parsed link and address dumps.

    `up` is administratively up *and* running (carrier): a VIP on a link without carrier
    answers nobody.  Address order is the kernel's (an IPv4 primary before its secondaries).
    """
    by_name = {link.name: link for link in links}
    wanted = {by_name[n].index: n for n in names if n in by_name}
    found: dict[str, list[AddressObs]] = {n: [] for n in wanted.values()}
    prev = memo.obs if memo is not None else {}
    made: dict[int, tuple[AddrInfo, int, AddressObs]] = {}
    for a in addrs:
        name = wanted.get(a.index)
        if name is None or a.scope != RT_SCOPE_UNIVERSE:
            continue
        hit = prev.get(id(a))
        if hit is not None and hit[0] is a and hit[1] == tag:
            obs = hit[2]
        else:
            secondary = a.family == socket.AF_INET and bool(a.flags & IFA_F_SECONDARY)
            obs = AddressObs(address=a.address, owned=a.proto == tag, secondary=secondary)
        made[id(a)] = (a, tag, obs)
        found[name].append(obs)
    if memo is not None:
        memo.obs = made
    out: dict[str, InterfaceObs] = {}
    for name in names:
        link = by_name.get(name)
        if link is None:
            out[name] = InterfaceObs(exists=False, up=False)
            continue
        out[name] = InterfaceObs(
            exists=True,
            up=(link.flags & (IFF_UP | IFF_RUNNING)) == (IFF_UP | IFF_RUNNING),
            promote_secondaries=promote.get(name),
            addresses=tuple(found[name]),
        )
    return out


def _read_sysctl_flag(path: str) -> bool | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip() not in ("", "0")
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_promote_secondaries(name: str) -> bool | None:
    """The effective value: the kernel ORs `all` with the interface's own setting.

    None when the interface has no IPv4 configuration (or does not exist).  Reads the
    calling thread's network namespace.
    """
    own = _read_sysctl_flag(f"/proc/sys/net/ipv4/conf/{check_ifname(name)}/promote_secondaries")
    if own is None:
        return None
    return own or bool(_read_sysctl_flag("/proc/sys/net/ipv4/conf/all/promote_secondaries"))


def dump_links_and_addrs(
    nl: Netlink, names: Iterable[str], memo: AddrMemo | None = None
) -> tuple[list[LinkInfo], list[AddrInfo]]:
    """All links, and the addresses (every scope) of the links named `names`."""
    links = parse_link_dump(nl.dump(RTM_GETLINK, ifinfomsg()))
    wanted = set(names)
    indexes = {link.index for link in links if link.name in wanted}
    addrs = parse_addr_dump(nl.dump(RTM_GETADDR, ifaddrmsg()), indexes, memo)
    return links, addrs


def _read_here(names: list[str], memo: ObsMemo | None) -> dict[str, InterfaceObs]:
    with Netlink() as nl:
        links, addrs = dump_links_and_addrs(nl, names, memo.addrs if memo is not None else None)
    present = {link.name for link in links}
    promote = {n: read_promote_secondaries(n) for n in names if n in present}
    return parse_interfaces(names, links, addrs, promote, memo=memo)


def read_interfaces(names: list[str], netns: str | None = None) -> dict[str, InterfaceObs]:
    """Observe `names` (missing ones as `exists=False`), in `netns` or the current namespace.

    The parse is memoised across calls (`ObsMemo`)."""
    names = [check_ifname(n) for n in names]
    return run_in_netns(netns, _read_here, names, _MEMO)
