"""Floating-address entries: parsing, checks, overlap detection and expansion (no I/O).

An entry is one host address with its prefix (`192.0.2.10/24`, like `ip addr add`) or an
inclusive range sharing one prefix (`192.0.2.2-192.0.2.100/24`).  Addresses are handled
as integer intervals so that overlap detection is a sort plus a sweep, and expanded once
into typed `Address` values (a 65,536-address range in about 0.1 s).  Errors are
`AddressError` with a short reason.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reconciler.address import Address, span

MAX_RANGE = 65_536  # addresses in one range entry
MAX_TOTAL = 200_000  # addresses in one spec, ips_file included
_BITS = {4: 32, 6: 128}


class AddressError(ValueError):
    """An entry that cannot be used; `str()` is the human reason."""


@dataclass(frozen=True)
class Block:
    """One entry as an inclusive integer interval of host addresses sharing `prefix`."""

    version: int
    start: int
    end: int
    prefix: int

    @property
    def count(self) -> int:
        return self.end - self.start + 1


def _fmt(n: int) -> str:
    return f"{n:,}"


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise AddressError(f"not an IP address: {text!r}") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise AddressError(f"{text!r}: a zone index (%...) is not allowed; set the interface instead")
    return ip


def _prefix(text: str, entry: str) -> int:
    if not text:
        raise AddressError(f"{entry!r}: missing /prefix (e.g. {entry.rstrip('/')}/24; /32 for a lone host)")
    if not (text.isascii() and text.isdigit()) or len(text) > 3:
        raise AddressError(f"{entry!r}: bad prefix length /{text}")
    return int(text)


def parse_entry(text: str) -> Block:
    """Parse one CIDR or range entry and check it on its own (not against other entries)."""
    entry = text.strip()
    if not entry:
        raise AddressError("empty address")
    if any(c.isspace() for c in entry):
        raise AddressError(f"expected one address, got {entry!r}")
    addr, slash, pfx = entry.rpartition("/")
    if not slash:
        raise AddressError(f"{entry!r}: missing /prefix (e.g. {entry}/24; /32 for a lone host)")
    prefix = _prefix(pfx, entry)
    first, dash, last = addr.partition("-")
    lo = _ip(first)
    hi = _ip(last) if dash else lo
    if lo.version != hi.version:
        raise AddressError(f"{entry!r}: range mixes IPv4 and IPv6")
    bits = _BITS[lo.version]
    if prefix > bits:
        raise AddressError(f"{entry!r}: prefix /{prefix} is too long for IPv{lo.version} (at most /{bits})")
    block = Block(lo.version, int(lo), int(hi), prefix)
    if dash:
        _check_range(block, entry)
    _check_special(block, entry)
    return block


def _check_range(b: Block, entry: str) -> None:
    if b.start > b.end:
        raise AddressError(f"{entry!r}: range start is after its end")
    host_bits = _BITS[b.version] - b.prefix
    # A host-length prefix (/32, /128) makes every address its own network: any range is fine.
    if host_bits and b.start >> host_bits != b.end >> host_bits:
        net_a, net_b = _net(b.version, b.start, b.prefix), _net(b.version, b.end, b.prefix)
        raise AddressError(f"{entry!r}: range ends are in different /{b.prefix} networks ({net_a} and {net_b})")
    if b.count > MAX_RANGE:
        raise AddressError(f"{entry!r}: range has {_fmt(b.count)} addresses; at most {_fmt(MAX_RANGE)} per entry")


def _net(version: int, addr: int, prefix: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    host_bits = _BITS[version] - prefix
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return cls((addr >> host_bits << host_bits, prefix))


def _check_special(b: Block, entry: str) -> None:
    """IPv4 /0../30: the network and broadcast addresses are not usable host addresses."""
    if b.version != 4 or b.prefix > 30:
        return
    net = _net(4, b.start, b.prefix)
    network, broadcast = int(net.network_address), int(net.broadcast_address)
    for special, what in ((network, "network"), (broadcast, "broadcast")):
        if b.start <= special <= b.end:
            ip = ipaddress.IPv4Address(special)
            if b.count == 1:
                raise AddressError(f"{entry!r}: {ip} is the {what} address of {net}, not a host address")
            raise AddressError(f"{entry!r}: range includes {ip}, the {what} address of {net}")


def find_overlap(blocks: Sequence[Block]) -> tuple[int, int] | None:
    """(i, j), i < j, two blocks sharing an address, or None.  j is the first block in
    `blocks` that overlaps an earlier one and i the first block it overlaps, so an error
    points at the first offending entry.  One sort, then sweeps: O(n log n)."""
    order = sorted(range(len(blocks)), key=lambda i: (blocks[i].version, blocks[i].start))
    if not _overlaps_within(blocks, order, len(blocks)):
        return None
    lo, hi = 1, len(blocks)  # no overlap among the first lo blocks; one among the first hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _overlaps_within(blocks, order, mid) else (mid, hi)
    j, b = hi - 1, blocks[hi - 1]
    i = next(i for i, a in enumerate(blocks) if a.version == b.version and a.start <= b.end and b.start <= a.end)
    return i, j


def _overlaps_within(blocks: Sequence[Block], order: list[int], limit: int) -> bool:
    """Whether two of blocks[:limit] overlap; `order` sorts all blocks by (version, start).
    Sweep: an overlap makes some block start at or before the largest end seen so far."""
    version, reach = -1, -1
    for i in order:
        if i >= limit:
            continue
        b = blocks[i]
        if b.version == version and b.start <= reach:
            return True
        if b.version != version or b.end > reach:
            version, reach = b.version, b.end
    return False


def first_over_total(blocks: Iterable[Block], cap: int = MAX_TOTAL) -> int | None:
    """Index of the block that takes the running address count past `cap`, or None."""
    total = 0
    for i, b in enumerate(blocks):
        total += b.count
        if total > cap:
            return i
    return None


def expand(b: Block) -> list[Address]:
    """The block's addresses in order, canonical text made in bulk (see reconciler.address)."""
    return span(b.version, b.start, b.end, b.prefix)


def group_expand(items: Iterable[tuple[str, Block]]) -> dict[str, tuple[Address, ...]]:
    """{interface: its addresses, sorted}; the blocks must not overlap (see find_overlap)."""
    per: dict[str, list[Block]] = {}
    for iface, b in items:
        per.setdefault(iface, []).append(b)
    out: dict[str, tuple[Address, ...]] = {}
    for iface in sorted(per):
        addrs: list[Address] = []
        for b in sorted(per[iface], key=lambda b: (b.version, b.start)):
            addrs.extend(expand(b))
        out[iface] = tuple(addrs)
    return out


def ips_file_entries(text: str) -> list[tuple[int, str]]:
    """(1-based line, entry) of the legacy /etc/hvmail_primary_ips format: one CIDR or range
    a line, `#` starts a comment, blank lines ignored.  Entries are not parsed here."""
    out: list[tuple[int, str]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.append((n, entry))
    return out
