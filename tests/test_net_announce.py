"""Announcements on the wire: GARP and unsolicited NA captured in the peer namespace, pacing.

Frames are captured with an AF_PACKET socket opened inside the peer namespace before
sending; only lower bounds are asserted on timing.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from reconciler.address import Address, parse
from reconciler.execute.announce import Announcer, RateLimiter, announce
from reconciler.execute.net import add_addresses
from reconciler.netlink import run_in_netns
from reconciler.spec.models import Announce
from tests.conftest import need_netns
from tests.netns_pair import Pair, mac_of, veth_pair


def addrs(texts: list[str]) -> list[Address]:
    return [parse(t) for t in texts]


@pytest.fixture
def pair() -> Iterator[Pair]:
    need_netns()
    with veth_pair() as p:
        yield p


def _capture(ns: str, dev: str, ethertype: int) -> socket.socket:
    def open_() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
        s.bind((dev, ethertype))
        s.settimeout(3.0)
        return s

    return run_in_netns(ns, open_)


def _frames(s: socket.socket, want: int, keep: Callable[[bytes], bool]) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + 5
    while len(out) < want and time.monotonic() < deadline:
        try:
            frame = s.recv(2048)
        except TimeoutError:
            break
        if keep(frame):
            out.append(frame)
    return out


def test_garp_received_by_peer(pair: Pair) -> None:
    vips = ["10.100.0.5/32", "10.100.0.6/24"]
    mac = mac_of(pair.ns_a, pair.a)
    cap = _capture(pair.ns_b, pair.b, 0x0806)
    try:
        res = announce(pair.a, addrs(vips), Announce(count=2, interval_ms=20), netns=pair.ns_a)
        frames = _frames(cap, 4, lambda f: f[28:32] in (bytes([10, 100, 0, 5]), bytes([10, 100, 0, 6])))
    finally:
        cap.close()
    assert res.sent == 4 and not res.failed
    assert len(frames) == 4
    for f in frames:
        assert f[0:6] == b"\xff" * 6 and f[6:12] == mac and f[12:14] == b"\x08\x06"
        htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", f[14:22])
        assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)  # Ethernet/IPv4 ARP request
        assert f[22:28] == mac and f[28:32] == f[38:42]  # sender IP == target IP == the VIP
        assert f[32:38] == bytes(6)  # target MAC zero, as the kernel's arp_notify sends it
    assert sorted(socket.inet_ntoa(f[28:32]) for f in frames) == ["10.100.0.5"] * 2 + ["10.100.0.6"] * 2


def _icmp6_checksum_ok(ip6: bytes) -> bool:
    plen = struct.unpack("!H", ip6[4:6])[0]
    pseudo = ip6[8:40] + struct.pack("!IxxxB", plen, 58) + ip6[40 : 40 + plen]
    pseudo += b"\0" * (len(pseudo) % 2)
    total = sum(struct.unpack(f"!{len(pseudo) // 2}H", pseudo))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def test_unsolicited_na_received_by_peer(pair: Pair) -> None:
    vip = "2001:db8:100::5"
    assert add_addresses(pair.a, addrs([f"{vip}/64"]), netns=pair.ns_a).ok
    mac = mac_of(pair.ns_a, pair.a)
    target = socket.inet_pton(socket.AF_INET6, vip)
    cap = _capture(pair.ns_b, pair.b, 0x86DD)
    try:
        res = announce(pair.a, addrs([f"{vip}/64"]), Announce(count=2, interval_ms=20), netns=pair.ns_a)
        frames = _frames(cap, 2, lambda f: len(f) >= 86 and f[20] == 58 and f[54] == 136 and f[62:78] == target)
    finally:
        cap.close()
    assert res.sent == 2 and not res.failed
    assert len(frames) == 2
    for f in frames:
        ip6 = f[14:]
        assert f[12:14] == b"\x86\xdd" and f[0:6] == bytes.fromhex("333300000001")  # to ff02::1
        assert ip6[7] == 255 and ip6[24:40] == socket.inet_pton(socket.AF_INET6, "ff02::1")
        icmp = ip6[40:]
        assert icmp[0:2] == bytes([136, 0])
        flags = struct.unpack("!I", icmp[4:8])[0]
        assert flags & 0x20000000 and not flags & 0x40000000  # Override set, Solicited clear
        assert icmp[24:26] == bytes([2, 1]) and icmp[26:32] == mac  # target link-layer address
        assert _icmp6_checksum_ok(ip6)


def test_pacing_respects_rate_and_interval(pair: Pair) -> None:
    vips = [f"10.110.0.{i}/32" for i in range(1, 11)]
    started = time.monotonic()
    res = announce(pair.a, addrs(vips), Announce(count=3, interval_ms=0, rate_limit_pps=50), netns=pair.ns_a)
    elapsed = time.monotonic() - started
    assert res.sent == 30
    assert elapsed >= 29 / 50 - 0.05  # 30 packets at 50/s; burst allowance is 10 ms
    started = time.monotonic()
    res = announce(pair.a, addrs(vips[:1]), Announce(count=4, interval_ms=150, rate_limit_pps=100_000), netns=pair.ns_a)
    assert res.sent == 4 and time.monotonic() - started >= 3 * 0.150


def test_announcer_runs_in_background_and_stops(pair: Pair) -> None:
    ann = Announcer()
    try:
        t0 = time.monotonic()
        slow = ann.submit(pair.a, addrs(["10.120.0.1/32"]), Announce(count=100, interval_ms=0, rate_limit_pps=10), pair.ns_a)
        assert time.monotonic() - t0 < 0.5  # submit does not block
        queued = ann.submit(pair.a, addrs(["10.120.0.2/32"]), Announce(count=1), pair.ns_a)
        time.sleep(0.3)
    finally:
        ann.stop()
    assert slow.done.wait(2) and queued.done.wait(2)
    assert slow.result is not None and slow.result.stopped and 1 <= slow.result.sent < 100
    assert queued.result is not None and queued.result.stopped and queued.result.sent == 0


def test_rate_limiter_is_shared_across_threads() -> None:
    lim = RateLimiter(200, burst_s=0.0)
    t0 = time.monotonic()
    threads = [threading.Thread(target=lambda: [lim.acquire() for _ in range(20)]) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - t0 >= 59 / 200 - 0.01


def test_missing_interface_is_a_result(pair: Pair) -> None:
    res = announce("rvnosuch0", addrs(["10.0.0.1/32"]), Announce(), netns=pair.ns_a)
    assert res.failed == 1 and res.sent == 0 and res.errors
