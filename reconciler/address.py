"""A floating address as a value: IP version, the address as an integer, prefix length, text.

An `Address` is made once where an address comes in (the spec loader expands its ranges
from integers; the observer reads the bytes of a netlink dump; a JSON observation or a test
gives text) and is carried as it is to the netlink message: the planner compares, sorts and
groups addresses as integers, the executor packs the integer, and the canonical text
(`ipaddress`'s `with_prefixlen`, IPv6 compressed) is made with the value and only printed.

It is a tuple (version, value, prefix, text): hashing, equality and ordering are the
tuple's, in C, and the order is numeric (IPv4 before IPv6, then by address, then by prefix
length).  Pure: no I/O.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable
from itertools import repeat
from typing import NamedTuple

_BITS = {4: 32, 6: 128}
_PLEN4 = {str(p): p for p in range(33)}  # the canonical IPv4 prefix lengths, as text


class Address(NamedTuple):
    """One host address with its prefix length, as `ip address add` takes it.  Made by
    `parse`, `of`, `from_packed` or `span` below, which keep `text` canonical."""

    version: int  # 4 or 6
    value: int  # the address as an integer
    prefix: int  # prefix length: 0..32 or 0..128
    text: str  # canonical 'addr/prefix' ('10.1.0.5/24', '2001:db8::5/64')

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Address({self.text!r})"

    @property
    def ip(self) -> str:
        """The address text without its prefix length."""
        return self.text[: self.text.rindex("/")]

    @property
    def host(self) -> tuple[int, int]:
        """(version, value): the address whatever its prefix length."""
        return self.version, self.value

    @property
    def packed(self) -> bytes:
        """The address in network byte order (4 or 16 bytes)."""
        return self.value.to_bytes(4 if self.version == 4 else 16, "big")

    @property
    def network(self) -> int:
        """The integer of its network address (host bits cleared)."""
        host = _BITS[self.version] - self.prefix
        return self.value >> host << host

    @property
    def broadcast(self) -> int:
        """The integer of its network's last address (all host bits set)."""
        return self.value | ((1 << (_BITS[self.version] - self.prefix)) - 1)

    @property
    def unicast(self) -> bool:
        """Neither multicast nor the unspecified address (0.0.0.0, ::)."""
        if self.value == 0:
            return False
        return self.value >> 28 != 0xE if self.version == 4 else self.value >> 120 != 0xFF


# tuple.__new__ without NamedTuple's Python-level __new__ (cheaper), for the makers below.
_Fields = tuple[int, int, int, str]
_make: Callable[[_Fields], Address] = functools.partial(tuple.__new__, Address)


def v4_text(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def of(version: int, value: int, prefix: int) -> Address:
    """The address `value`/`prefix` of IP `version` (the caller checks the ranges)."""
    ip = v4_text(value) if version == 4 else ipaddress.IPv6Address(value).compressed
    return _make((version, value, prefix, f"{ip}/{prefix}"))


def from_packed(raw: bytes, prefix: int) -> Address:
    """The address in `raw` (4 or 16 bytes, network order, as netlink carries it)."""
    if len(raw) == 4:
        return _make((4, int.from_bytes(raw, "big"), prefix, f"{socket.inet_ntop(socket.AF_INET, raw)}/{prefix}"))
    ip = ipaddress.IPv6Address(raw)  # ValueError unless 16 bytes
    return _make((6, int(ip), prefix, f"{ip.compressed}/{prefix}"))


def parse(text: str) -> Address:
    """'ADDR/PLEN' read as `ipaddress.ip_interface` reads it; ValueError otherwise, and also
    without a /PLEN or with an IPv6 zone index (the message never quotes the text: it may come
    from a file the user should not see echoed).  Canonical IPv4 text, the common
    case (a JSON observation from the peer holds thousands), is read by inet_pton, which
    takes exactly four decimal octets without leading zeros, and no `ipaddress`."""
    ip, _sep, plen = text.partition("/")
    prefix = _PLEN4.get(plen)
    if prefix is not None:
        try:
            raw = socket.inet_pton(socket.AF_INET, ip)
        except (OSError, ValueError):  # not canonical IPv4 (ValueError: NUL or unencodable)
            pass
        else:
            return _make((4, int.from_bytes(raw, "big"), prefix, text))
    if "/" not in text:
        raise ValueError("not an address with a prefix length (like 192.0.2.10/24)")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:  # ipaddress quotes the text; the messages here never do
        raise ValueError("not an address with a prefix length (like 192.0.2.10/24)") from None
    if isinstance(iface, ipaddress.IPv6Interface) and iface.scope_id is not None:
        raise ValueError("a zone index (%...) is not allowed")
    return _make((iface.version, int(iface.ip), iface.network.prefixlen, iface.with_prefixlen))


# Blocks no floating address may fall in, first match wins: (version, first, last, why).
# Link-local (169.254/16, fe80::/10) is allowed: VRRPv3-style virtual routers float an
# IPv6 link-local address.  The network and broadcast address of an IPv4 prefix, and the
# Subnet-Router anycast address of an IPv6 one, are checked per entry (spec.addresses).
_V4, _V6 = (1 << 32) - 1, (1 << 128) - 1
NOT_HOST: tuple[tuple[int, int, int, str], ...] = (
    (4, 0, 0, "the unspecified address (0.0.0.0)"),
    (4, 0, 0x00FF_FFFF, "'this network' (0.0.0.0/8, RFC 1122), not an assignable address"),
    (4, 0x7F00_0000, 0x7FFF_FFFF, "a loopback address (127.0.0.0/8)"),
    (4, 0xE000_0000, 0xEFFF_FFFF, "a multicast address (224.0.0.0/4)"),
    (4, _V4, _V4, "the limited broadcast address (255.255.255.255)"),
    (6, 0, 0, "the unspecified address (::)"),
    (6, 1, 1, "the loopback address (::1)"),
    (6, 0xFFFF << 32, (0xFFFF << 32) | _V4, "an IPv4-mapped IPv6 address (::ffff:0:0/96); write the IPv4 address"),
    (6, 0xFF << 120, _V6, "a multicast address (ff00::/8)"),
)


def not_host(version: int, first: int, last: int) -> str | None:
    """Why some address in first..last (inclusive) can never be a floating (host) address,
    or None: unspecified, 'this network', loopback, multicast, limited broadcast,
    IPv4-mapped (see NOT_HOST)."""
    for v, lo, hi, why in NOT_HOST:
        if v == version and first <= hi and lo <= last:
            return why
    return None


def span(version: int, first: int, last: int, prefix: int) -> list[Address]:
    """The addresses first..last (inclusive), all with `prefix`, in order; texts made in bulk
    (65,536 addresses in about 0.1 s, twice the time the texts alone take)."""
    if version == 4:
        p = prefix
        texts = [f"{i >> 24}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/{p}" for i in range(first, last + 1)]
    else:
        texts = []
        lo = first
        while lo <= last:
            hi = min(last, lo | 0xFFFF)
            texts += _texts6(lo, hi, prefix)
            lo = hi + 1
    # zip builds the 4-tuples in C (reusing one as each is copied): 2-3x cheaper than a loop
    return list(map(_make, zip(repeat(version), range(first, last + 1), repeat(prefix), texts)))


def _texts6(lo: int, hi: int, prefix: int) -> list[str]:
    """Texts of the IPv6 addresses lo..hi that differ only in the last 16 bits.  With a
    non-zero last hextet the compressed form is a fixed head plus that hextet in hex; the
    head is taken from ipaddress itself and checked on a second sample, else ipaddress
    does all."""
    v6, suffix = ipaddress.IPv6Address, f"/{prefix}"
    base = lo >> 16 << 16
    head = v6(base | 1).compressed[:-1]
    fast = v6(base | 0xABCD).compressed == head + "abcd"
    return [
        f"{head}{i & 0xFFFF:x}{suffix}" if fast and i & 0xFFFF else v6(i).compressed + suffix
        for i in range(lo, hi + 1)
    ]
