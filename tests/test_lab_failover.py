"""Automatic failover on the two-VM lab (lab.automatic): real DRBD 8.4 with the etcd-backed
fence-peer handler, PostgreSQL 15 with synchronous replication, an etcd member in each VM and the
witness member on the host, softdog as the watchdog, the agents started at boot, and the host's
client committing through the floating address.

ONE lab session; the scenarios run in order, each from the state the previous one left:
  1 bring-up: mx1 (the preferred Primary) acquires the key, mx2 becomes its synchronous
    standby and the published failover candidate;
  2 power cut of the Primary (mx1's qemu killed mid-load): mx2 takes over by itself at the next
    epoch on real DRBD (its fence-peer handler answers 4: it holds the key) with every
    acknowledged commit; mx1, powered on, comes back never writable, never DRBD Primary; the
    operator's `fenced: [mx1]` rewinds it, and it becomes mx2's synchronous candidate;
  3 the watchdog: the holder's (mx2) agent and its lease keeper SIGSTOPped (nothing renews,
    nothing demotes): softdog resets mx2 before mx1 acquires the key and promotes; no
    acknowledged commit is lost.
Timings (lab.automatic.TIMINGS: TTL 50 s) are printed with -s.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator

import pytest

from lab.automatic import FENCE_PEER, TIMINGS, WATCHDOG_S, AutoLabCluster
from lab.cluster import IFACE, PY, Writer
from lab.lab import Lab
from lab.provision import RESOURCE, observe, provision
from lab.topology import Layout
from tests.conftest import need
from tests.test_e2e_lab import Run, _need_lab, assert_cluster, keep_evidence, lines
from tests.test_lab_reboots import boot_offset, lost_on, new_boot, wait_one

pytestmark = pytest.mark.slow

TTL = TIMINGS["lease_ttl_s"]
TAKES_OVER = re.compile(rf": (~ drbd \S+: Secondary -> Primary|\+ postgres: start as the primary|"
                        rf"~ postgres: promote \(standby -> primary\)[^:]*|\+ .* on {IFACE}|~ adopt .* on {IFACE}): ok in ")
FIGURES: dict[str, str] = {}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    _need_lab()
    need(shutil.which("etcd") is not None, "needs etcd 3.4 (Debian's etcd-server; scripts/setup installs it)")
    tmp = tmp_path_factory.mktemp("failover")
    lab = Lab(Layout("rlabaf", tmp / "lab"), owned=True)
    c = AutoLabCluster(lab, tmp / "witness")
    r = Run(lab, c, tmp)
    t0 = time.monotonic()
    try:
        r.times["lab up"] = lab.up()
        c.start_witness()
        print(f"\n{provision(lab, fencing='resource-and-stonith', fence_peer=FENCE_PEER)}")
        c.build("mx1")
        for n in ("mx1", "mx2"):
            c.install_boot(n)
        yield r
    finally:
        keep_evidence(r, tmp)
        c.close()
        lab.down()
        r.times["total"] = time.monotonic() - t0
        print("\nautomatic failover on the lab: " + "; ".join(f"{k}: {v}" for k, v in FIGURES.items()))
        print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in r.times.items()))
    assert not lab.lay.journal.exists()


def took_over(log: str) -> list[str]:
    return [ln for ln in log.splitlines() if TAKES_OVER.search(ln)]


def steady(c: AutoLabCluster, holder: str) -> bool:
    """`holder` holds the key and has published the other node as the candidate of its epoch."""
    try:
        k = c.keys()
    except RuntimeError:
        return False
    lead, cand = k.get("leader"), k.get("candidate")
    other = "mx2" if holder == "mx1" else "mx1"
    return (isinstance(lead, dict) and lead.get("node") == holder and isinstance(cand, dict)
            and cand.get("node") == other and cand.get("epoch") == k.get("epoch"))


def wait_steady(c: AutoLabCluster, holder: str, timeout: float) -> float:
    t0 = time.monotonic()
    while not steady(c, holder):
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{holder} is not the holder with its peer published after {timeout:.0f} s: "
                                 f"{c.keys()}")
        time.sleep(2.0)
    return time.monotonic() - t0


def epoch(c: AutoLabCluster) -> int:
    return int(c.keys().get("epoch", 0))  # type: ignore[arg-type]


def never_writable(c: AutoLabCluster, node: str) -> None:
    """`node` is not writable and not DRBD Primary right now (checked by the test, not the agent)."""
    r = c.psql(node, "SELECT pg_is_in_recovery()")
    assert not (r.ok and r.stdout.strip() == "f"), f"{node}'s PostgreSQL is writable"
    assert observe(c.lab, node).role != "Primary", f"{node} is DRBD Primary"
    assert not c.holds(node), f"{node} holds the floating address"


# ---- the scenarios ------------------------------------------------------------------------------

def test_1_bring_up_mx1_holds_the_key_mx2_is_its_synchronous_candidate(story: Run) -> None:
    r, c = story, story.c
    assert isinstance(c, AutoLabCluster)
    r.times["1 boot hooks -> mx1 holder, mx2 candidate"] = wait_steady(c, "mx1", 900)
    r.times["1 -> both converged"] = c.wait_converged(timeout=600)
    assert_cluster(r, "mx1")
    st = c.status("mx1")
    assert st["postgres"]["sync_standbys"] == ["mx2"], st["postgres"]
    r.writer = Writer(c.vip)
    r.writer.wait_acks(30)


def test_2_power_cut_of_the_primary_the_peer_takes_over_by_itself(story: Run) -> None:
    r, c, w = story, story.c, story.writer
    assert isinstance(c, AutoLabCluster) and w is not None
    e0 = epoch(c)
    since = c.offsets()
    prev = boot_offset(c, "mx1")
    w.wait_acks(20)
    t_cut = time.monotonic()
    r.lab.power_off("mx1")
    acked_before = {i for i, t in w.acks() if t <= t_cut}
    r.times["2 cut -> mx2 holds the key"] = c.wait_holder("mx2", TTL + 240)
    assert epoch(c) == e0 + 1
    wait_one(c, "mx2", "mx2 to serve", lambda t: lines(t, "start service app: ok"), since["mx2"], 300)
    w.wait_acks(10, timeout=120)
    first_after = next(t for _, t in w.acks() if t > t_cut)
    on_mx2 = c.rows("mx2")
    lost = sorted(i for i in acked_before if i not in on_mx2)
    assert not lost, f"{len(lost)} commits acknowledged by mx1 are not on mx2: {lost[:10]}"
    kmsg = c.sh("mx2", "dmesg | grep -i 'fence-peer' || true").stdout
    assert "exit code 4" in kmsg, f"mx2's DRBD promotion did not go through its fence-peer handler: {kmsg}"
    st = c.status("mx2")
    assert st["drbd"][RESOURCE]["role"] == "Primary" and st["postgres"]["in_recovery"] is False
    FIGURES["power cut"] = (f"outage {first_after - t_cut:.1f} s (TTL {TTL} s), {len(acked_before)} commits "
                            f"acknowledged by mx1 before the cut, 0 lost")

    # mx1 back: never writable, never DRBD Primary, never the addresses
    r.times["2 mx1 power-on -> lab agent answers"] = r.lab.power_on("mx1")
    since1 = new_boot(c, "mx1", prev)
    t_back = time.monotonic()
    asks = wait_one(c, "mx1", "mx1 to ask for `fenced: [mx1]`",
                    lambda t: lines(t, "waiting:", "fenced: [mx1]"), since1, 600)
    r.times["2 mx1 back -> asks for fenced"] = time.monotonic() - t_back
    never_writable(c, "mx1")
    assert not took_over(c.log("mx1", since1)), "mx1 took over after its power cut"
    print(f"\nmx1 waits: {asks[-1][:300]}")

    # the operator: mx2 preferred, mx1 declared fenced; mx1 is rewound and streams; then undeclared
    since2 = c.offsets()
    c.set_spec("mx2", fenced=("mx1",))
    wait_one(c, "mx1", "mx1 rewound and streaming", lambda t: lines(t, "start as a standby", ": ok"), since2["mx1"], 600)
    c.set_spec("mx2")
    r.times["2 fenced -> mx2 holder, mx1 candidate"] = wait_steady(c, "mx2", 600)
    never_writable(c, "mx1")
    assert not took_over(c.log("mx1", since1)), "mx1 took over after its power cut"
    w.wait_acks(10)


def test_3_watchdog_resets_a_frozen_holder_before_the_peer_promotes(story: Run) -> None:
    r, c, w = story, story.c, story.writer
    assert isinstance(c, AutoLabCluster) and w is not None
    since = c.offsets()
    w.wait_acks(10)
    # the agent and its keeper frozen: nothing renews the lease, nothing feeds the watchdog or demotes
    agent = f"^{PY} -m reconciler run"
    keeper = f"^{PY} -m reconciler.coord.lease"
    out = c.sh("mx2", f"pgrep -f '{agent}'; pgrep -f '{keeper}'").stdout.split()
    assert len(out) == 2, f"expected one agent and one keeper on mx2: {out}"
    t_stop = time.monotonic()
    c.sh("mx2", f"kill -STOP {' '.join(out)}")
    acked_before = {i for i, t in w.acks() if t <= t_stop}
    r.times["3 frozen -> mx2 reset by softdog"] = r.lab.wait_off("mx2", timeout=WATCHDOG_S + 60)
    t_reset = time.monotonic()
    assert c.holder() == "mx2", "the key moved before the frozen holder was reset"
    c.wait_holder("mx1", TTL + 240)
    t_acq = time.monotonic()
    r.times["3 frozen -> mx1 holds the key"] = t_acq - t_stop
    wait_one(c, "mx1", "mx1 to serve", lambda t: lines(t, "start service app: ok"), since["mx1"], 300)
    promoted = took_over(c.log("mx1", since["mx1"]))
    assert promoted, "mx1 did not take over"
    assert t_reset < t_acq, "mx1 acquired the key before mx2 was reset"
    w.wait_acks(10, timeout=120)
    on_mx1 = c.rows("mx1")
    lost = sorted(i for i in acked_before if i not in on_mx1)
    assert not lost, f"{len(lost)} commits acknowledged by mx2 are not on mx1: {lost[:10]}"
    after = [(i, t) for i, t in w.acks() if t > t_acq]
    assert not lost_on(c, "mx1", after)
    FIGURES["watchdog"] = (f"mx2 reset {t_reset - t_stop:.1f} s after its agent froze (watchdog {WATCHDOG_S} s), "
                           f"mx1 acquired at {t_acq - t_stop:.1f} s (TTL {TTL} s), {len(acked_before)} commits "
                           "acknowledged before the freeze, 0 lost")
