"""Floating-address entries: parsing, checks, overlap detection and expansion (no I/O).

An entry is one host address with its prefix (`192.0.2.10/24`, like `ip addr add`) or an
inclusive range sharing one prefix (`192.0.2.2-192.0.2.100/24`).  Addresses are handled
as integer intervals so that overlap detection is a sort plus a sweep, and expanded once
into typed `Address` values (a 65,536-address range in about 0.1 s).  Errors are
`AddressError` with a short reason that never quotes the entry (it may come from a file the
user running `validate` should not see echoed; the error's FILE:LINE:COL points at it).

Refused as a floating address, in a CIDR or anywhere in a range: prefix /0; the blocks of
`reconciler.address.NOT_HOST` (unspecified, 0.0.0.0/8, loopback, multicast, limited
broadcast, IPv4-mapped IPv6); for IPv4 /1../30 the network and the broadcast address of the
prefix (/31 and /32 have none, RFC 3021).  IPv6 has no broadcast, and its all-zero host
(the Subnet-Router anycast address, `2001:db8::/64`) is allowed: Linux assigns it, and
legacy ips files use it.  Link-local addresses are allowed (an IPv6 virtual router floats
one, as VRRPv3 does).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reconciler.address import Address, not_host, span

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
        raise AddressError("not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise AddressError("a zone index (%...) is not allowed; set the interface instead")
    return ip


def _prefix(text: str, entry: str) -> int:
    if not text:
        raise AddressError("missing prefix length after / (e.g. /24; /32 for a lone host)")
    if not (text.isascii() and text.isdigit()) or len(text) > 3:
        raise AddressError("bad prefix length (expected /0 to /32, or /128 for IPv6)")
    return int(text)


def parse_entry(text: str) -> Block:
    """Parse one CIDR or range entry and check it on its own (not against other entries)."""
    entry = text.strip()
    if not entry:
        raise AddressError("empty address")
    if any(c.isspace() for c in entry):
        raise AddressError("expected one address, got several words")
    addr, slash, pfx = entry.rpartition("/")
    if not slash:
        raise AddressError("missing /prefix (e.g. 192.0.2.10/24; /32 for a lone host)")
    prefix = _prefix(pfx, entry)
    first, dash, last = addr.partition("-")
    lo = _ip(first)
    hi = _ip(last) if dash else lo
    if lo.version != hi.version:
        raise AddressError("range mixes IPv4 and IPv6")
    bits = _BITS[lo.version]
    if prefix > bits:
        raise AddressError(f"prefix too long for IPv{lo.version} (at most /{bits})")
    if prefix == 0:
        raise AddressError("prefix /0 would put the whole address space on the link; give the subnet's prefix")
    block = Block(lo.version, int(lo), int(hi), prefix)
    if dash:
        _check_range(block, entry)
    _check_special(block, entry)
    return block


def _check_range(b: Block, entry: str) -> None:
    if b.start > b.end:
        raise AddressError("range start is after its end")
    host_bits = _BITS[b.version] - b.prefix
    # A host-length prefix (/32, /128) makes every address its own network: any range is fine.
    if host_bits and b.start >> host_bits != b.end >> host_bits:
        raise AddressError(f"range ends are in different /{b.prefix} networks")
    if b.count > MAX_RANGE:
        raise AddressError(f"range has more than {_fmt(MAX_RANGE)} addresses (the limit per entry)")


def _check_special(b: Block, entry: str) -> None:
    """Addresses that are never a host's (see the module docstring)."""
    why = not_host(b.version, b.start, b.end)
    if why is not None:
        raise AddressError(f"is {why}" if b.count == 1 else f"range includes {why}")
    if b.version != 4 or b.prefix > 30:
        return
    net = b.start >> (32 - b.prefix) << (32 - b.prefix)
    for what, offset in (("network", 0), ("broadcast", (1 << (32 - b.prefix)) - 1)):
        if b.start <= net + offset <= b.end:
            if b.count == 1:
                raise AddressError(f"is the {what} address of its /{b.prefix} network, not a host address")
            raise AddressError(f"range includes the {what} address of its /{b.prefix} network")


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
