"""Address observer and executor against the real kernel: a veth pair in fresh namespaces.

Parsers are tested on dump bytes captured from a 6.18 kernel (tests/fixtures/net/*.bin,
written from `Netlink().dump(...)` in a scratch namespace: veth fxa/fxb, fxb down, three
addresses added by this tool and three by `ip addr add`).  Namespaces: tests/netns_pair.py.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.address import Address, parse
from reconciler.execute.net import (
    TAG,
    add_addresses,
    adopt_addresses,
    remove_addresses,
    set_promote_secondaries,
)
from reconciler.model import AddressObs, InterfaceObs
from reconciler.netlink import (
    IFA_F_TENTATIVE,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_DUMP_INTR,
    NLM_F_MULTI,
    NLMSG_ERROR,
    RTM_DELADDR,
    RTM_GETADDR,
    RTM_NEWADDR,
    Netlink,
    dump_interrupted,
    ifaddrmsg,
    iter_messages,
    pack_attr,
    pack_msg,
    parse_addr_dump,
    parse_error,
    parse_link_dump,
    run_in_netns,
)
from reconciler.observe.net import ObsMemo, parse_interfaces, read_interfaces
from tests.conftest import need_netns
from tests.netns_pair import Pair, ip, sysctl, veth_pair

FIXTURES = Path(__file__).parent / "fixtures" / "net"


def addrs(texts: list[str]) -> list[Address]:
    return [parse(t) for t in texts]


# --- parsers on captured bytes --------------------------------------------------------------


def test_parse_addr_dump_captured() -> None:
    dump = parse_addr_dump((FIXTURES / "addr_dump.bin").read_bytes())
    assert all(a.address.prefix == a.prefixlen and a.address == parse(a.address.text) for a in dump)
    got = [(a.index, a.address.text, a.scope, a.flags & 0xFF, a.proto) for a in dump]
    assert got == [
        (1, "127.0.0.1/8", 254, 0x80, None),
        (2, "10.9.1.1/24", 0, 0x80, None),
        (3, "10.9.0.1/24", 0, 0x80, TAG),
        (3, "192.0.2.7/32", 0, 0x80, None),
        (3, "10.9.0.2/24", 0, 0x81, TAG),  # secondary
        (3, "10.9.0.3/24", 0, 0x81, None),
        (1, "::1/128", 254, 0x80, 1),  # kernel_lo
        (3, "2001:db8::6/128", 0, 0x82, None),  # nodad
        (3, "2001:db8::5/64", 0, 0x82, TAG),
        (3, "fe80::ff:fe00:a/64", 253, 0x80, 3),  # kernel_ll
    ]


def test_memoised_parse_equals_a_fresh_parse_as_the_dump_changes() -> None:
    from reconciler.netlink import AddrMemo

    data = (FIXTURES / "addr_dump.bin").read_bytes()
    msgs = [data[s - 16 : e] for _t, _f, _s, s, e in iter_messages(data)]
    memo = AddrMemo()
    fresh = parse_addr_dump(data)
    assert parse_addr_dump(data, memo=memo) == fresh  # first call: everything parsed
    assert parse_addr_dump(data, {3}, memo=memo) == [a for a in fresh if a.index == 3]
    # one address flips to secondary (a byte of its flags changes), one disappears
    changed = bytearray(msgs[2])
    changed[18] |= 0x01  # ifa_flags of 10.9.0.1/24
    later = b"".join([*msgs[:2], bytes(changed), *msgs[4:]])
    got = parse_addr_dump(later, memo=memo)
    assert got == parse_addr_dump(later)
    assert [a.address.text for a in got][:3] == ["127.0.0.1/8", "10.9.1.1/24", "10.9.0.1/24"]
    assert parse("192.0.2.7/32") not in {a.address for a in got}
    assert memo.last is not None and len(memo.last) == len(got)  # only the last dump is kept


def test_parse_interfaces_captured() -> None:
    links = parse_link_dump((FIXTURES / "link_dump.bin").read_bytes())
    assert [(x.index, x.name, x.mac.hex()) for x in links] == [
        (1, "lo", "000000000000"),
        (2, "fxb", "02000000000b"),
        (3, "fxa", "02000000000a"),
    ]
    dump = parse_addr_dump((FIXTURES / "addr_dump.bin").read_bytes())
    obs = parse_interfaces(["fxa", "fxb", "lo", "gone0"], links, dump, {"fxa": False, "fxb": True, "lo": False})
    assert obs["fxa"] == InterfaceObs(
        exists=True,
        up=False,  # admin up, but the peer fxb is down: no carrier
        promote_secondaries=False,
        addresses=(
            AddressObs(address="10.9.0.1/24", owned=True),
            AddressObs(address="192.0.2.7/32", owned=False),
            AddressObs(address="10.9.0.2/24", owned=True, secondary=True),
            AddressObs(address="10.9.0.3/24", owned=False, secondary=True),
            AddressObs(address="2001:db8::6/128", owned=False),
            AddressObs(address="2001:db8::5/64", owned=True),
        ),
    )
    assert obs["fxb"] == InterfaceObs(
        up=False, promote_secondaries=True, addresses=(AddressObs(address="10.9.1.1/24", owned=False),)
    )
    assert obs["lo"].addresses == () and obs["lo"].exists
    assert obs["gone0"] == InterfaceObs(exists=False, up=False)
    # memoised: equal results, and the unchanged AddressObs objects are reused
    memo = ObsMemo()
    args = (["fxa", "fxb", "lo", "gone0"], links, dump, {"fxa": False, "fxb": True, "lo": False})
    first = parse_interfaces(*args, memo=memo)
    second = parse_interfaces(*args, memo=memo)
    assert first == second == obs and first["fxa"].addresses[0] is second["fxa"].addresses[0]


def test_dump_intr_flag_and_truncation() -> None:
    body = ifaddrmsg(socket.AF_INET, 32, 3) + pack_attr(1, bytes([10, 0, 0, 1])) + pack_attr(2, bytes([10, 0, 0, 1]))
    clean = pack_msg(RTM_NEWADDR, NLM_F_MULTI, 7, body)
    assert not dump_interrupted(clean)
    assert dump_interrupted(clean + pack_msg(RTM_NEWADDR, NLM_F_MULTI | NLM_F_DUMP_INTR, 7, body))
    assert parse_addr_dump(clean)[0].address == parse("10.0.0.1/32")
    with pytest.raises(ValueError):
        list(iter_messages(clean[:-4]))


def test_parse_error_with_extended_ack() -> None:
    orig = struct.pack("=IHHII", 40, RTM_DELADDR, 5, 9, 0)
    tlv = pack_attr(1, b"Cannot find address\0")
    body = struct.pack("=i", -errno.EADDRNOTAVAIL) + orig + tlv
    msg = pack_msg(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 9, body)
    [(_t, flags, seq, start, end)] = list(iter_messages(msg))
    assert seq == 9
    assert parse_error(msg, start, end, flags) == (errno.EADDRNOTAVAIL, "Cannot find address")
    ack = pack_msg(NLMSG_ERROR, NLM_F_CAPPED, 9, struct.pack("=i", 0) + orig)
    [(_t, flags, _s, start, end)] = list(iter_messages(ack))
    assert parse_error(ack, start, end, flags) == (0, "")


def test_bad_input_is_refused_before_any_io() -> None:
    for bad in ("", "eth0 ", "a/b", "x" * 16, "..", "eth0;rm"):
        with pytest.raises(ValueError):
            add_addresses(bad, addrs(["10.0.0.1/32"]))
    for text in ("10.0.0.1", "10.0.0.300/32", "nonsense/24"):  # no Address is made of these
        with pytest.raises(ValueError):
            parse(text)
    for text in ("224.0.0.1/32", "::/128"):  # addresses, but not unicast ones
        with pytest.raises(ValueError):
            remove_addresses("eth0", addrs([text]))
    with pytest.raises(TypeError):
        remove_addresses("eth0", ["10.0.0.1/32"])  # type: ignore[list-item]  # text, not an Address
    with pytest.raises(ValueError):
        read_interfaces(["bad name"])


# --- real namespaces ------------------------------------------------------------------------


@pytest.fixture
def pair() -> Iterator[Pair]:
    need_netns()
    with veth_pair() as p:
        yield p


def _addrs(p: Pair) -> dict[str, AddressObs]:
    return {a.address.text: a for a in read_interfaces([p.a], netns=p.ns_a)[p.a].addresses}


def test_observe_round_trip(pair: Pair) -> None:
    ip("-n", pair.ns_a, "addr", "add", "10.50.0.1/24", "dev", pair.a)
    ip("-n", pair.ns_a, "addr", "add", "2001:DB8:0:0::1/64", "dev", pair.a, "nodad")
    assert add_addresses(pair.a, addrs(["10.50.0.2/24", "198.51.100.9/32"]), netns=pair.ns_a).ok
    obs = read_interfaces([pair.a, "rvmissing0"], netns=pair.ns_a)
    assert obs["rvmissing0"] == InterfaceObs(exists=False, up=False)
    me = obs[pair.a]
    assert me.exists and me.up and me.promote_secondaries is False
    assert set(me.addresses) == {
        AddressObs(address="10.50.0.1/24", owned=False),
        AddressObs(address="10.50.0.2/24", owned=True, secondary=True),
        AddressObs(address="198.51.100.9/32", owned=True),
        AddressObs(address="2001:db8::1/64", owned=False),  # canonical, link-local left out
    }
    assert set_promote_secondaries(pair.a, netns=pair.ns_a).changed == [pair.a]
    assert read_interfaces([pair.a], netns=pair.ns_a)[pair.a].promote_secondaries is True
    ip("-n", pair.ns_a, "link", "set", pair.a, "down")
    assert read_interfaces([pair.a], netns=pair.ns_a)[pair.a].up is False


def test_add_1000_in_one_call_all_owned(pair: Pair) -> None:
    items = [f"10.60.{i // 250}.{i % 250 + 1}/32" for i in range(1000)]
    res = add_addresses(pair.a, addrs(items), netns=pair.ns_a)
    assert res.ok and len(res.changed) == 1000
    seen = _addrs(pair)
    assert all(seen[x].owned and not seen[x].secondary for x in items)
    again = add_addresses(pair.a, addrs(items[:10]), netns=pair.ns_a)  # idempotent: EEXIST is not a failure
    assert again.ok and len(again.unchanged) == 10 and not again.changed


def _watch_addr_events(ns: str) -> socket.socket:
    def open_() -> socket.socket:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        s.bind((0, 0x10 | 0x100))  # RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
        s.settimeout(0.5)
        return s

    return run_in_netns(ns, open_)


def _drain_events(s: socket.socket) -> list[tuple[int, str]]:
    out = []
    try:
        while True:
            data = s.recv(1 << 20)
            for mtype, _f, _s, start, end in iter_messages(data):
                if mtype in (RTM_NEWADDR, RTM_DELADDR):
                    addr = parse_addr_dump(pack_msg(RTM_NEWADDR, 0, 0, data[start:end]))[0].address
                    out.append((mtype, addr))
    except TimeoutError:
        return out


def test_adopt_tags_in_place_without_duplicate_or_gap(pair: Pair) -> None:
    ip("-n", pair.ns_a, "addr", "add", "10.70.0.5/24", "dev", pair.a)
    ip("-n", pair.ns_a, "addr", "add", "2001:db8:70::5/64", "dev", pair.a, "nodad")
    items = ["10.70.0.5/24", "2001:db8:70::5/64"]
    assert not any(_addrs(pair)[x].owned for x in items)
    watch = _watch_addr_events(pair.ns_a)
    try:
        res = adopt_addresses(pair.a, addrs(items), netns=pair.ns_a)
        events = _drain_events(watch)
    finally:
        watch.close()
    assert res.ok and sorted(res.changed) == sorted(items)
    assert [e for e in events if e[0] == RTM_DELADDR] == []  # never absent, not even briefly
    after = [a for a in read_interfaces([pair.a], netns=pair.ns_a)[pair.a].addresses]
    assert sorted(a.address.text for a in after) == sorted(items)  # no duplicate entries
    assert all(a.owned for a in after)
    assert adopt_addresses(pair.a, addrs(items), netns=pair.ns_a).unchanged == items


def test_remove_never_touches_untagged(pair: Pair) -> None:
    ip("-n", pair.ns_a, "addr", "add", "10.80.0.5/32", "dev", pair.a)
    ip("-n", pair.ns_a, "addr", "add", "2001:db8:80::5/128", "dev", pair.a, "nodad")
    assert add_addresses(pair.a, addrs(["10.80.0.6/32"]), netns=pair.ns_a).ok
    items = ["10.80.0.5/32", "2001:db8:80::5/128", "10.80.0.6/32", "10.80.0.7/32"]
    res = remove_addresses(pair.a, addrs(items), netns=pair.ns_a)
    assert res.changed == ["10.80.0.6/32"]
    assert res.unchanged == ["10.80.0.7/32"]  # already absent: not an error
    assert sorted(a for a, _why in res.skipped) == ["10.80.0.5/32", "2001:db8:80::5/128"]
    assert all("not owned" in why for _a, why in res.skipped) and not res.failed
    assert set(_addrs(pair)) == {"10.80.0.5/32", "2001:db8:80::5/128"}


SUBNET = ["10.90.0.1/24", "10.90.0.2/24", "10.90.0.3/24"]


def test_kernel_cascade_exists_without_promote(pair: Pair) -> None:
    """The trap itself: deleting a subnet's primary silently deletes its secondaries."""
    assert add_addresses(pair.a, addrs(SUBNET), netns=pair.ns_a).ok
    assert [_addrs(pair)[x].secondary for x in SUBNET] == [False, True, True]
    ip("-n", pair.ns_a, "addr", "del", SUBNET[0], "dev", pair.a)
    assert not set(SUBNET) & set(_addrs(pair))


def test_remove_refuses_primary_that_would_cascade(pair: Pair) -> None:
    assert add_addresses(pair.a, addrs(SUBNET), netns=pair.ns_a).ok
    res = remove_addresses(pair.a, addrs(SUBNET[:1]), netns=pair.ns_a)
    assert not res.changed and res.skipped[0][0] == SUBNET[0] and "promote_secondaries" in res.skipped[0][1]
    assert set(SUBNET) <= set(_addrs(pair))


def test_promote_then_remove_primary_keeps_survivors(pair: Pair) -> None:
    assert add_addresses(pair.a, addrs(SUBNET), netns=pair.ns_a).ok
    assert set_promote_secondaries(pair.a, netns=pair.ns_a).ok
    res = remove_addresses(pair.a, addrs(SUBNET[:1]), netns=pair.ns_a)
    assert res.ok and res.changed == SUBNET[:1]
    left = _addrs(pair)
    assert SUBNET[0] not in left and {SUBNET[1], SUBNET[2]} <= set(left)
    assert [left[SUBNET[1]].secondary, left[SUBNET[2]].secondary] == [False, True]  # .2 promoted


def test_remove_whole_subnet_group_in_one_call(pair: Pair) -> None:
    items = [f"10.91.0.{i}/24" for i in range(1, 101)]  # ascending: the primary comes first
    assert add_addresses(pair.a, addrs(items), netns=pair.ns_a).ok
    res = remove_addresses(pair.a, addrs(items), netns=pair.ns_a)
    assert res.ok, res.failed[:3]
    assert len(res.changed) == 100 and not res.unchanged  # no EADDRNOTAVAIL from a cascade
    assert not set(items) & set(_addrs(pair))


def _bind_udp(ns: str, addr: str) -> int:
    def go() -> int:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            try:
                s.bind((addr, 0))
            except OSError as exc:
                return exc.errno or -1
        return 0

    return run_in_netns(ns, go)


def test_ipv6_add_is_usable_at_once(pair: Pair) -> None:
    assert sysctl(pair.ns_a, f"net/ipv6/conf/{pair.a}/accept_dad") != "0"
    # Control: without NODAD the kernel holds a new address tentative (unusable) during DAD.
    ip("-n", pair.ns_a, "addr", "add", "2001:db8:99::11/64", "dev", pair.a)
    assert _bind_udp(pair.ns_a, "2001:db8:99::11") == errno.EADDRNOTAVAIL
    assert add_addresses(pair.a, addrs(["2001:db8:99::10/64"]), netns=pair.ns_a).ok
    assert _bind_udp(pair.ns_a, "2001:db8:99::10") == 0

    def flags() -> int:
        with Netlink() as nl:
            dump = parse_addr_dump(nl.dump(RTM_GETADDR, ifaddrmsg()))
        return next(a.flags for a in dump if a.address == parse("2001:db8:99::10/64"))

    assert not run_in_netns(pair.ns_a, flags) & IFA_F_TENTATIVE


def test_missing_interface_and_netns_are_results_not_crashes(pair: Pair) -> None:
    res = add_addresses("rvnosuch0", addrs(["10.0.0.1/32"]), netns=pair.ns_a)
    assert not res.ok and "no interface" in (res.error or "")
    assert remove_addresses("rvnosuch0", addrs(["10.0.0.1/32"]), netns=pair.ns_a).error
    assert set_promote_secondaries("rvnosuch0", netns=pair.ns_a).error
    assert add_addresses(pair.a, addrs(["10.0.0.1/32"]), netns=f"{pair.ns_a}-gone").error
