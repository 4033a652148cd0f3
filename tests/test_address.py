"""The typed address agrees with `ipaddress`: its text, its parse (results and errors), its
order, and the network, broadcast and unicast facts the planner and the executor use."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reconciler.address import Address, from_packed, of, parse, span

octet = st.one_of(st.integers(0, 255).map(str), st.sampled_from(["00", "01", "256", "999", "", "1a", "٣", " 1", "+1"]))
plen = st.one_of(st.integers(0, 32).map(str), st.sampled_from(["", "33", "032", "05", "00", "-1", "1.5", "٣"]))
v4_text = st.builds(lambda a, b, c, d, p, sep: f"{a}.{b}.{c}.{d}{sep}{p}", octet, octet, octet, octet, plen,
                    st.sampled_from(["/", "/", "/", "", "//"]))
v6_text = st.builds(lambda ip, p: f"{ip}/{p}", st.ip_addresses(v=6).map(str), st.integers(0, 128))
texts = st.one_of(v4_text, v6_text, st.text(max_size=20))
v4 = st.tuples(st.just(4), st.integers(0, 2**32 - 1), st.integers(0, 32))
v6 = st.tuples(st.just(6), st.integers(0, 2**128 - 1), st.integers(0, 128))


def _reference(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        return None


def _iface(a: Address) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    return ipaddress.IPv4Interface((a.value, a.prefix)) if a.version == 4 else ipaddress.IPv6Interface((a.value, a.prefix))


@settings(max_examples=3000, deadline=None)
@given(texts)
@example("10.0.0.1/32")
@example("010.0.0.1/32")
@example("10.0.0.1/032")
@example("10.0.0.1/05")
@example("10.0.0.1/255.255.255.0")
@example("10.0.0.1")
@example("0.0.0.0/0")
@example("fe80::1%eth0/64")
@example("10.0.0.1\x00/32")
@example("\ud800/32")
@example("1.2.3/24")
@example("١.٢.٣.٤/24")
@example("10.0.0.1/32/")
def test_parse_gives_what_ipaddress_reads_or_refuses(text: str) -> None:
    ref = _reference(text)
    if ref is None or "/" not in text or getattr(ref, "scope_id", None) is not None:
        with pytest.raises(ValueError):
            parse(text)
        return
    got = parse(text)
    assert got == (ref.version, int(ref.ip), ref.network.prefixlen, ref.with_prefixlen)
    assert got == of(got.version, got.value, got.prefix) == parse(got.text)
    assert str(got) == f"{got}" == got.text and got.ip == str(ref.ip)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(v4, v6))
def test_made_from_numbers_or_bytes_as_ipaddress_writes_it(vvp: tuple[int, int, int]) -> None:
    version, value, prefix = vvp
    a = of(version, value, prefix)
    ref = _iface(a)
    assert a.text == ref.with_prefixlen and a.packed == ref.ip.packed
    assert from_packed(ref.ip.packed, prefix) == a == parse(a.text)
    assert a.network == int(ref.network.network_address) and a.broadcast == int(ref.network.broadcast_address)
    assert a.unicast == (not ref.ip.is_multicast and not ref.ip.is_unspecified)
    assert a.host == (version, value)
    if version == 4:
        assert a.text == f"{socket.inet_ntop(socket.AF_INET, a.packed)}/{prefix}"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(v4, v6), max_size=30))
def test_order_is_numeric(vvps: list[tuple[int, int, int]]) -> None:
    addrs = [of(*x) for x in vvps]
    assert sorted(addrs) == sorted(addrs, key=lambda a: (a.version, int(_iface(a).ip), a.prefix))


@settings(max_examples=200, deadline=None)
@given(st.one_of(v4, v6), st.integers(0, 600))
def test_span_is_the_addresses_one_by_one(start: tuple[int, int, int], length: int) -> None:
    version, first, prefix = start
    last = min(first + length, (1 << (32 if version == 4 else 128)) - 1)
    assert span(version, first, last, prefix) == [of(version, i, prefix) for i in range(first, last + 1)]


def test_as_text_wherever_text_is_written() -> None:
    a = parse("2001:DB8::5/64")
    assert repr(a) == "Address('2001:db8::5/64')" and f"{a} on eth0" == "2001:db8::5/64 on eth0"
    with pytest.raises(ValueError):
        from_packed(b"\x0a\x00\x00", 24)
