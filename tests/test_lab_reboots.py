"""Reboots and power cuts on the two-VM lab (real DRBD 8.4, PostgreSQL 15, floating IPs),
each with the host's client committing through the floating address and the agent started
at boot the way the packaged unit starts it (`LabCluster.install_boot`).

Not in `.ci/run` (each boot of a VM under software emulation costs minutes; see the
README's "Reboots, power cuts and a real MTA"): run them with

    ./scripts/test -m reboots -s tests/test_lab_reboots.py   (with tests/test_lab_mail.py: the MTA)

ONE lab session; the scenarios run in order, each from the state the previous one left:
  1 bring-up with the agents started by the boot hook (mx1 Primary);
  2 clean reboot of the Secondary (mx2): it comes back, resyncs, streams; mx1 never stops;
  3 clean reboot of the Primary (mx1), the spec still naming it: mx2 never promotes, mx1
    comes back as Primary; the outage is reported;
  4 power cut of the Primary (mx1, qemu killed): mx2 does not promote in manual mode; after
    `fenced: [mx1]` it takes over; mx1, powered on with the spec naming mx2, comes up never
    writable and never DRBD Primary, and rejoins (rewound if it diverged); every commit
    acknowledged before the cut is on mx2 except those `fenced` accepted to lose (counted);
  5 power cut of the Secondary (mx1 now): mx2 keeps serving; mx1 resyncs on its return.
Each prints its figures (outage, commits acknowledged, lost) with `-s`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from lab.cluster import IFACE, LabCluster, Writer, last_state
from lab.lab import Lab
from lab.provision import RESOURCE, provision
from lab.topology import Layout
from tests.test_e2e_lab import Run, _need_lab, assert_cluster, keep_evidence, lines, wait_drbd

pytestmark = [pytest.mark.slow, pytest.mark.reboots]

# What a node does only when it becomes writable or takes the addresses (the action titles
# of reconciler.plan.kinds, as the agent logs them: "NODE: SYMBOL TITLE: ok in N s").
TAKES_OVER = re.compile(rf": (~ drbd \S+: Secondary -> Primary|\+ postgres: start as the primary|"
                        rf"~ postgres: promote \(standby -> primary\)[^:]*|\+ .* on {IFACE}|~ adopt .* on {IFACE}): ok in ")
FIGURES: dict[str, str] = {}
TAKEOVER_AT: list[float] = []


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    _need_lab()
    tmp = tmp_path_factory.mktemp("reboots")
    lab = Lab(Layout("rlabrb", tmp / "lab"), owned=True)
    r = Run(lab, LabCluster(lab), tmp)
    t0 = time.monotonic()
    try:
        r.times["lab up"] = lab.up()
        print(f"\n{provision(lab)}")
        r.c.build("mx1")
        for n in ("mx1", "mx2"):
            r.c.install_boot(n)
        yield r
    finally:
        keep_evidence(r, tmp)
        lab.down()
        r.times["total"] = time.monotonic() - t0
        print("\nreboot scenarios: " + "; ".join(f"{k}: {v}" for k, v in FIGURES.items()))
        print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in r.times.items()))
    assert not lab.lay.journal.exists()


# ---- helpers ------------------------------------------------------------------------------------

def wait_one(c: LabCluster, node: str, what: str, ok, since: int = 0, timeout: float = 300.0, every: float = 2.0):
    """Poll one node's agent log (from byte offset `since`) until ok(text) is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        text = c.log(node, since)
        v = ok(text)
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; {node}'s log:\n"
                                 + "\n".join(text.splitlines()[-30:]))
        time.sleep(every)


def took_over(log: str) -> list[str]:
    return [ln for ln in log.splitlines() if TAKES_OVER.search(ln)]


def settle(c: LabCluster, node: str, since: dict[str, int], timeout: float = 600.0) -> float:
    """Until `node`'s agent reports converged after `since` and the other's last report, if
    any, is converged too (an agent that had nothing to do logs nothing); seconds."""
    other = "mx2" if node == "mx1" else "mx1"

    def ok(_: str) -> bool:
        return (last_state(c.log(node, since[node])) == "converged"
                and last_state(c.log(other, since[other])) in ("", "converged"))
    t0 = time.monotonic()
    wait_one(c, node, f"{node} converged (and {other})", ok, timeout=timeout, every=3.0)
    return time.monotonic() - t0


def boot_offset(c: LabCluster, node: str) -> int:
    """Byte offset of the last boot's first line in `node`'s agent log (the boot hook marks
    it): what a power cut left unwritten at the end of the log is not counted on."""
    raw = c.log(node).encode("utf-8", "surrogateescape")
    at = raw.rfind(b"--- boot ")
    assert at >= 0, f"{node}'s agent log has no boot marker: its agent was not started by the boot hook"
    return at


def new_boot(c: LabCluster, node: str, prev: int) -> int:
    """The offset of the boot marker after `prev`, once the boot hook has written it."""
    def found(_: str) -> tuple[int] | None:
        at = boot_offset(c, node)
        return (at,) if at != prev else None
    return int(wait_one(c, node, f"{node}'s boot hook to start its agent", found, timeout=180)[0])


def outage(w: Writer, since: float) -> float:
    return Writer.longest_gap(w.acks(), since)


def lost_on(c: LabCluster, node: str, acks: list[tuple[int, float]]) -> list[int]:
    present = c.rows(node)
    return sorted(i for i, _ in acks if i not in present)


# ---- the scenarios ------------------------------------------------------------------------------

def test_1_bring_up_with_the_agents_started_at_boot(story: Run) -> None:
    r, c = story, story.c
    r.times["1 boot hooks -> both converged"] = c.wait_converged(timeout=900)
    assert_cluster(r, "mx1")
    r.writer = Writer(c.vip)
    r.writer.wait_acks(20)


def test_2_clean_reboot_of_the_secondary(story: Run) -> None:
    r, c, w = story, story.c, story.writer
    assert w is not None
    since, t0 = c.offsets(), time.monotonic()
    r.times["2 mx2 shut down and booted"] = c.clean_reboot("mx2")
    w.wait_acks(20)
    since["mx2"] = boot_offset(c, "mx2")
    r.times["2 mx2 back -> both converged"] = settle(c, "mx2", since)
    wait_drbd(r, "Connected UpToDate/UpToDate", lambda s: all(
        (o.connection, o.disk, o.peer_disk) == ("Connected", "UpToDate", "UpToDate") for o in s.values()), 300)
    assert_cluster(r, "mx1")
    assert not took_over(c.log("mx1", since["mx1"])) and not took_over(c.log("mx2", since["mx2"]))
    gap, acks = outage(w, t0), w.acks()
    lost = lost_on(c, "mx1", acks)
    assert not lost, f"{len(lost)} acknowledged commits lost: {lost[:10]}"
    FIGURES["clean reboot of the Secondary"] = (f"longest gap between commits {gap:.2f} s, "
                                                f"{len(acks)} acknowledged so far, 0 lost")


def test_3_clean_reboot_of_the_primary_named_by_the_spec(story: Run) -> None:
    r, c, w = story, story.c, story.writer
    assert w is not None
    since, t0 = c.offsets(), time.monotonic()
    r.times["3 mx1 shut down and booted"] = c.clean_reboot("mx1")
    since["mx1"] = boot_offset(c, "mx1")
    r.times["3 mx1 back -> both converged"] = settle(c, "mx1", since)
    w.wait_acks(20)
    assert_cluster(r, "mx1")
    assert not took_over(c.log("mx2", since["mx2"])), "mx2 took over while the spec names mx1"
    gap, acks = outage(w, t0), w.acks()
    lost = lost_on(c, "mx1", acks)
    assert not lost, f"{len(lost)} acknowledged commits lost: {lost[:10]}"
    FIGURES["clean reboot of the Primary"] = f"write outage {gap:.1f} s, {len(acks)} acknowledged so far, 0 lost"


def test_4_power_cut_of_the_primary_then_fenced_takeover_and_return(story: Run) -> None:
    r, c, w = story, story.c, story.writer
    assert w is not None
    since = c.offsets()
    w.wait_acks(20)
    prev = boot_offset(c, "mx1")
    t_cut = time.monotonic()
    r.lab.power_off("mx1")
    acked_before = [a for a in w.acks() if a[1] <= t_cut]
    # manual mode: nothing happens by itself; the spec still names mx1
    time.sleep(30)
    assert not took_over(c.log("mx2", since["mx2"])), "mx2 took over on its own"
    # the operator names mx2: it still waits, for the declaration that mx1 is off, and says so
    c.set_spec("mx2", nodes=("mx2",))
    wait_one(c, "mx2", "mx2 to wait for `fenced: [mx1]`", lambda t: lines(t, "waiting:", "fenced: [mx1]"),
             since["mx2"], 300)
    time.sleep(10)
    assert not took_over(c.log("mx2", since["mx2"])), "mx2 took over without the fencing declaration"
    st = c.status("mx2")
    assert st["postgres"]["in_recovery"] is True and st["drbd"][RESOURCE]["role"] == "Secondary"
    # the operator makes sure mx1 is off and declares it
    t_decl = time.monotonic()
    c.set_spec("mx2", fenced=("mx1",), nodes=("mx2",))
    wait_one(c, "mx2", "mx2 to take over", lambda t: lines(t, "start service app: ok"), since["mx2"], 300)
    w.wait_acks(20)
    r.times["4 fenced: [mx1] -> mx2 serving"] = time.monotonic() - t_decl
    first_after = next(t for _, t in w.acks() if t > t_cut)
    acked_by_mx1 = {i for i, _ in acked_before}
    on_mx2 = c.rows("mx2")
    lost = [i for i in sorted(acked_by_mx1) if i not in on_mx2]
    # mx1, off, gets the spec naming mx2; powered on, it must never be writable or DRBD Primary
    c.edit_spec_while_off("mx1", "mx2", fenced=("mx1",))
    since1 = {"mx2": c.log_size("mx2")}
    r.times["4 mx1 power-on -> lab agent answers"] = r.lab.power_on("mx1")
    since1["mx1"] = new_boot(c, "mx1", prev)
    r.times["4 mx1 back -> both converged"] = settle(c, "mx1", since1)
    log1 = c.log("mx1", since1["mx1"])
    assert not took_over(log1), f"mx1 took over after its power cut: {took_over(log1)}"
    rewound = lines(log1, "pg_rewind from 10.0.0.2:5432", ": ok")
    assert_cluster(r, "mx2")
    w.wait_acks(20)
    acks = w.acks()
    after = [(i, t) for i, t in acks if t > t_decl]
    TAKEOVER_AT.append(t_decl)
    assert not lost_on(c, "mx2", after), "commits acknowledged by mx2 after the takeover were lost"
    FIGURES["power cut of the Primary"] = (
        f"write outage {first_after - t_cut:.1f} s (cut -> first commit on mx2, of which the operator's "
        f"declaration came {t_decl - t_cut:.1f} s after the cut), {len(acked_by_mx1)} acknowledged by mx1 before "
        f"the cut, {len(lost)} of them not on mx2 (the loss `fenced: [mx1]` accepts: asynchronous "
        f"replication), {len(after)} acknowledged after the takeover, 0 lost; mx1 rejoined "
        + ("rewound (pg_rewind)" if rewound else "without a rewind (it had not diverged)"))
    assert len(lost) <= len(acked_by_mx1)


def test_5_power_cut_of_the_secondary(story: Run) -> None:
    r, c, w = story, story.c, story.writer
    assert w is not None and TAKEOVER_AT
    since, t0 = c.offsets(), time.monotonic()
    prev = boot_offset(c, "mx1")
    r.lab.power_off("mx1")
    w.wait_acks(40)  # mx2 keeps serving
    time.sleep(15)  # and goes on while DRBD and PostgreSQL notice the peer is gone
    w.wait_acks(20)
    r.times["5 mx1 power-on -> lab agent answers"] = r.lab.power_on("mx1")
    since["mx1"] = new_boot(c, "mx1", prev)
    r.times["5 mx1 back -> both converged"] = settle(c, "mx1", since)
    wait_drbd(r, "Connected UpToDate/UpToDate", lambda s: all(
        (o.connection, o.disk, o.peer_disk) == ("Connected", "UpToDate", "UpToDate") for o in s.values()), 300)
    assert_cluster(r, "mx2")
    assert not took_over(c.log("mx1", since["mx1"]))
    acks = w.stop()
    r.writer = None
    lost = lost_on(c, "mx2", [(i, t) for i, t in acks if t > TAKEOVER_AT[0]])
    assert not lost, f"{len(lost)} acknowledged commits lost: {lost[:10]}"
    FIGURES["power cut of the Secondary"] = (f"longest gap between commits {outage(w, t0):.2f} s, "
                                             f"{len(acks)} acknowledged in all, 0 lost since the takeover")
