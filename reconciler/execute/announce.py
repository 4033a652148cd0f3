"""Announce floating addresses: gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6).

The kernel announces nothing when an address is added, so after ADD/ADOPT the agent sends
`count` rounds, `interval_ms` apart, through one global `rate_limit_pps` pacer so that 10k
addresses do not flood the segment.  `announce` is synchronous; `Announcer` runs the same
work in a background thread so the reconcile loop is not blocked.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from reconciler.address import Address
from reconciler.netlink import RTM_GETLINK, Netlink, check_ifname, ifinfomsg, parse_link_dump, run_in_netns
from reconciler.spec.models import Announce

ETH_P_ARP, ETH_P_IP = 0x0806, 0x0800
ND_NEIGHBOR_ADVERT = 136
NA_FLAG_ROUTER, NA_FLAG_OVERRIDE = 0x80000000, 0x20000000
ICMP6_FILTER = 1
ALL_NODES = "ff02::1"
_MAX_ERRORS = 20


def garp_frame(mac: bytes, ip: Address) -> bytes:
    """Broadcast ARP request with sender IP = target IP = `ip`, padded to 60 bytes (pure).

    The target hardware address is zero, as the kernel's own arp_notify and RFC 5227 send it.
    """
    eth = b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1) + mac + ip.packed + b"\0" * 6 + ip.packed
    return (eth + arp).ljust(60, b"\0")


def na_packet(mac: bytes, ip: Address, router: bool = False) -> bytes:
    """ICMPv6 unsolicited NA body: Override set, Solicited clear, target link-layer option (pure).

    The checksum is left 0: the kernel fills it in on raw ICMPv6 sockets.
    """
    flags = NA_FLAG_OVERRIDE | (NA_FLAG_ROUTER if router else 0)
    return struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, flags) + ip.packed + bytes([2, 1]) + mac


class RateLimiter:
    """Spaces packets at least 1/pps apart, with at most `burst_s` worth of catch-up."""

    def __init__(self, pps: int, burst_s: float = 0.01) -> None:
        self._lock = threading.Lock()
        self._next = 0.0
        self._burst_s = burst_s
        self.set_rate(pps)

    def set_rate(self, pps: int) -> None:
        self._gap = 1.0 / max(1, pps)

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait for the next slot; False if `stop` was set meanwhile."""
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now - self._burst_s)
            self._next = slot + self._gap
        delay = slot - now
        if stop is not None:
            return not stop.wait(delay) if delay > 0 else not stop.is_set()
        if delay > 0:
            time.sleep(delay)
        return True


@dataclass
class AnnounceResult:
    iface: str
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, in words
    stopped: bool = False


@dataclass
class _Link:
    index: int
    mac: bytes
    router: bool
    send: list[tuple[Callable[[bytes], object], bytes]]
    socks: list[socket.socket]



def _sender(sock: socket.socket, dest: tuple[str, int, int, int]) -> Callable[[bytes], object]:
    def send(payload: bytes) -> int:
        return sock.sendto(payload, dest)
    return send

def _is_router(iface: str) -> bool:
    try:
        with open(f"/proc/sys/net/ipv6/conf/{iface}/forwarding", encoding="ascii") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def _open(iface: str, v4: list[Address], v6: list[Address]) -> _Link:
    """Look up the link and open the sockets; runs inside the target namespace."""
    with Netlink() as nl:
        links = {x.name: x for x in parse_link_dump(nl.dump(RTM_GETLINK, ifinfomsg()))}
    if iface not in links or len(links[iface].mac) != 6:
        raise OSError(19, f"no Ethernet interface {iface}")
    link = _Link(links[iface].index, links[iface].mac, _is_router(iface), [], [])
    if v4:
        pkt = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)  # proto 0: receives nothing
        link.socks.append(pkt)
        pkt.bind((iface, 0))
        link.send += [(pkt.send, garp_frame(link.mac, ip)) for ip in v4]
    if v6:
        icmp = socket.socket(socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_ICMPV6)
        link.socks.append(icmp)
        icmp.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, b"\xff" * 32)  # never queue input
        icmp.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        icmp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        icmp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, link.index)
        icmp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        dest = (ALL_NODES, 0, 0, link.index)
        link.send += [(_sender(icmp, dest), na_packet(link.mac, ip, link.router)) for ip in v6]
    return link


def _split(items: Iterable[Address]) -> tuple[list[Address], list[Address]]:
    """IPv4 and IPv6 addresses, each IP once whatever its prefix lengths."""
    v4: dict[int, Address] = {}
    v6: dict[int, Address] = {}
    for a in items:
        (v4 if a.version == 4 else v6).setdefault(a.value, a)
    return list(v4.values()), list(v6.values())


def _rounds(
    link: _Link, settings: Announce, limiter: RateLimiter, stop: threading.Event, result: AnnounceResult
) -> None:
    interval = settings.interval_ms / 1000.0
    for r in range(settings.count):
        started = time.monotonic()
        for send, payload in link.send:
            if not limiter.acquire(stop):
                result.stopped = True
                return
            try:
                send(payload)
                result.sent += 1
            except OSError as exc:
                result.failed += 1
                if len(result.errors) < _MAX_ERRORS:
                    result.errors.append(f"send on {result.iface}: {exc.strerror or exc}")
        wait = started + interval - time.monotonic()
        if r + 1 < settings.count and wait > 0 and stop.wait(wait):
            result.stopped = True
            return


def announce(
    iface: str,
    items: Iterable[Address],
    settings: Announce,
    netns: str | None = None,
    limiter: RateLimiter | None = None,
    stop: threading.Event | None = None,
) -> AnnounceResult:
    """Send `settings.count` rounds of GARP/NA for `items` on `iface`, paced; blocks until done."""
    result = AnnounceResult(check_ifname(iface))
    v4, v6 = _split(items)
    if settings.count == 0 or not (v4 or v6):
        return result
    try:
        link = run_in_netns(netns, _open, iface, v4, v6)
    except OSError as exc:
        result.errors.append(f"{iface}: {exc.strerror or exc}")
        result.failed = len(v4) + len(v6)
        return result
    try:
        _rounds(link, settings, limiter or RateLimiter(settings.rate_limit_pps), stop or threading.Event(), result)
    finally:
        for s in link.socks:
            s.close()
    return result


@dataclass
class AnnounceJob:
    iface: str
    items: tuple[Address, ...]
    settings: Announce
    netns: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    result: AnnounceResult | None = None


class Announcer:
    """One background thread announcing submitted jobs in order, all through one pacer."""

    def __init__(self, rate_limit_pps: int = Announce().rate_limit_pps) -> None:
        self._queue: queue.Queue[AnnounceJob | None] = queue.Queue()
        self._stop = threading.Event()
        self._limiter = RateLimiter(rate_limit_pps)
        self._thread = threading.Thread(target=self._run, name="announcer", daemon=True)
        self._thread.start()

    def submit(self, iface: str, items: Iterable[Address], settings: Announce, netns: str | None = None) -> AnnounceJob:
        """Queue an announcement and return at once; `job.done` is set when it finished."""
        job = AnnounceJob(check_ifname(iface), tuple(items), settings, netns)
        if self._stop.is_set():
            raise RuntimeError("announcer stopped")
        self._queue.put(job)
        return job

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the packet in flight; unfinished jobs end with `stopped=True`."""
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                break
            self._limiter.set_rate(job.settings.rate_limit_pps)
            try:
                job.result = announce(job.iface, job.items, job.settings, job.netns, self._limiter, self._stop)
            except Exception as exc:  # keep the thread alive for the next job
                job.result = AnnounceResult(job.iface, errors=[f"{type(exc).__name__}: {exc}"])
            job.done.set()
        while not self._queue.empty():  # drain: mark what never ran
            job = self._queue.get_nowait()
            if job is not None:
                job.result = AnnounceResult(job.iface, stopped=True)
                job.done.set()
