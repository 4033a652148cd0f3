"""A veth pair between two fresh network namespaces, for the address and announce tests.

Names are unique per use; `veth_pair()` deletes exactly the namespaces it created (which
also destroys the veth), even when the test fails.  `ip` runs by argv with a timeout.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from reconciler.netlink import run_in_netns


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, timeout=20, capture_output=True, text=True).stdout


def sysctl(ns: str, path: str, value: str | None = None) -> str:
    """Read (and first write, if `value`) /proc/sys/PATH inside namespace `ns`."""

    def go() -> str:
        with open(f"/proc/sys/{path}", "r+", encoding="ascii") as f:
            if value is not None:
                f.write(value)
                f.seek(0)
            return f.read().strip()

    return run_in_netns(ns, go)


def mac_of(ns: str, dev: str) -> bytes:
    return bytes.fromhex(ip("-n", ns, "-br", "link", "show", dev).split()[2].replace(":", ""))


@dataclass
class Pair:
    ns_a: str
    ns_b: str
    a: str  # in ns_a
    b: str  # in ns_b


@contextmanager
def veth_pair() -> Iterator[Pair]:
    """veth `a` in ns_a <-> `b` in ns_b, all up; promote_secondaries pinned to 0 in ns_a."""
    tag = uuid.uuid4().hex[:8]
    p = Pair(f"rct-{tag}-a", f"rct-{tag}-b", f"rv{tag}a", f"rv{tag}b")
    created: list[str] = []
    try:
        for ns in (p.ns_a, p.ns_b):
            ip("netns", "add", ns)
            created.append(ns)
        ip("-n", p.ns_a, "link", "add", p.a, "type", "veth", "peer", "name", p.b, "netns", p.ns_b)
        for ns, dev in ((p.ns_a, p.a), (p.ns_b, p.b), (p.ns_a, "lo"), (p.ns_b, "lo")):
            ip("-n", ns, "link", "set", dev, "up")
        for key in ("all", p.a):  # a new netns may inherit the host's IPv4 'all'/'default'
            sysctl(p.ns_a, f"net/ipv4/conf/{key}/promote_secondaries", "0")
        yield p
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], timeout=20, capture_output=True)
