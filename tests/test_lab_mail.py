"""A real MTA and real clients on the two-VM lab: Postfix from Debian is the Primary's
service (queue and maildir on DRBD), swaks sends a numbered stream of messages to the
floating address, pgbench inserts rows through it; the agents are started at boot.

Not in `.ci/run` (minutes of VM time; see the README's "Reboots, power cuts and a real MTA"): run with

    ./scripts/test -m reboots -s tests/test_lab_mail.py

ONE lab session, in order:
  1 bring-up with Postfix in the spec: it runs on mx1 only; the clients start;
  2 planned switchover to mx2 with swaks and pgbench running: every message answered 250 is
    in the maildir once (duplicates reported), every acknowledged pgbench transaction's row
    is there; the SMTP outage (first refused -> next 250), pgbench's failed runs and its
    transactions per second before and during the switchover are printed;
  3 power cut of the Primary (mx2) with swaks running: after `fenced: [mx2]` mx1 takes over
    and every message answered 250 before or after the cut is delivered.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lab import mta
from lab.cluster import LabCluster
from lab.lab import Lab
from lab.provision import provision
from lab.topology import Layout
from tests.test_e2e_lab import Run, _need_lab, lines
from tests.test_lab_reboots import FIGURES, took_over, wait_one

pytestmark = [pytest.mark.slow, pytest.mark.reboots]


@dataclass
class MailRun(Run):
    sender: mta.Sender | None = None
    bench: mta.Bench | None = None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailRun]:
    _need_lab()
    tmp = tmp_path_factory.mktemp("mail")
    lab = Lab(Layout("rlabml", tmp / "lab"), owned=True)
    r = MailRun(lab, LabCluster(lab, mta=True), tmp)
    try:
        r.times["lab up"] = lab.up()
        print(f"\n{provision(lab)}")
        mta.configure(r.c)
        mta.prepare(r.c)
        r.c.build("mx1")
        for n in ("mx1", "mx2"):
            r.c.install_boot(n)
        yield r
    finally:
        for client in (r.sender, r.bench):
            if client is not None:
                client.stop()
        if r.bench is not None:
            r.bench.cleanup()
        for n in ("mx1", "mx2"):
            try:
                (tmp / f"agent-{n}.log").write_text(r.c.log(n))
                (tmp / f"maillog-{n}.txt").write_text(r.c.sh(n, f"cat {mta.MAILLOG} 2>/dev/null || true").stdout)
                if r.failed:
                    print(f"----- {n} agent log (last 40 lines; all in {tmp}) -----\n"
                          + "\n".join(r.c.log(n).splitlines()[-40:]))
            except Exception as e:  # noqa: BLE001 - a node may be off; the teardown goes on
                print(f"(no logs from {n}: {e})")
        print(lab.keep_consoles(tmp))
        lab.down()
        print("\nmail scenarios: " + "; ".join(f"{k}: {v}" for k, v in FIGURES.items() if k.startswith("mail")))
        print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in r.times.items()))
    assert not lab.lay.journal.exists()


def postfix_runs(c: LabCluster, node: str) -> bool:
    return c.lab.exec(node, ["/usr/sbin/postfix", "status"], timeout=60).ok


def all_delivered(c: LabCluster, node: str, accepted: list[tuple[int, float]], timeout: float = 300.0):
    """Until the queue on `node` is empty and every accepted X-Seq is in its maildir."""
    want = {n for n, _ in accepted}
    deadline = time.monotonic() + timeout
    while True:
        got = mta.delivered(c, node)
        missing = sorted(want - set(got))
        if not missing and mta.queue_empty(c, node):
            return got
        if time.monotonic() > deadline:
            q = c.sh(node, "postqueue -p 2>&1 | tail -20 || true").stdout
            raise AssertionError(f"{len(missing)} messages answered 250 are not in {node}'s maildir after "
                                 f"{timeout:.0f} s: {missing[:20]}; queue:\n{q}")
        time.sleep(3)


def test_1_bring_up_with_postfix(story: MailRun) -> None:
    r, c = story, story.c
    r.times["1 boot hooks -> both converged"] = c.wait_converged(timeout=900)
    assert postfix_runs(c, "mx1") and not postfix_runs(c, "mx2")
    for sql in mta.BENCH_SETUP:
        c.psql("mx1", sql).check()
    r.sender = mta.Sender(c.vip)
    r.sender.wait_accepted(10)
    r.bench = mta.Bench(c.vip)
    time.sleep(20)


def test_2_switchover_with_smtp_and_pgbench(story: MailRun) -> None:
    r, c, s, b = story, story.c, story.sender, story.bench
    assert s is not None and b is not None
    since = c.offsets()
    t0, e0 = time.monotonic(), time.time()
    c.set_spec("mx2")
    r.times["2 edit -> both converged"] = c.wait_converged(since, timeout=600)
    e_conv = time.time()
    assert postfix_runs(c, "mx2") and not postfix_runs(c, "mx1")
    s.wait_accepted(10)
    time.sleep(20)
    b.stop()
    e1 = time.time()
    acked = b.acknowledged()
    rows = {(int(run), int(cl)): int(k) for run, cl, k in (
        ln.split("|") for ln in c.psql("mx2", "SELECT run, client, count(*) FROM bench_rows GROUP BY 1, 2")
        .check().stdout.split())}
    short = {key: (len(ends), rows.get(key, 0)) for key, ends in acked.items() if rows.get(key, 0) < len(ends)}
    assert not short, f"acknowledged pgbench transactions missing (run, client): (acked, rows) {short}"
    extra = sum(rows.get(key, 0) - len(ends) for key, ends in acked.items())
    n_acked = sum(len(v) for v in acked.values())
    before = b.tps(e0 - 20, e0)
    during = b.tps(e0, e_conv)
    accepted = s.accepted()
    got = all_delivered(c, "mx2", accepted)
    dups = {n: k for n, k in got.items() if k > 1}
    smtp_gap, refused = s.outage(t0)
    FIGURES["mail: switchover, SMTP (swaks)"] = (
        f"outage {smtp_gap:.1f} s (first refused -> next 250), {refused} refused, {len(accepted)} answered 250 "
        f"so far, all {len(accepted)} in the maildir, {len(dups)} duplicated")
    FIGURES["mail: switchover, pgbench"] = (
        f"{n_acked} transactions acknowledged over {b.runs} runs ({b.failed_runs} ended by the switchover or "
        f"refused), 0 lost, {extra} committed unacknowledged; tps before median {statistics.median(before):.0f}, "
        f"during: min {min(during)}, {sum(1 for x in during if x == 0)} s at 0, over {e1 - e0:.0f} s")
    r.bench = None
    b.cleanup()


def test_3_power_cut_of_the_primary_with_smtp(story: MailRun) -> None:
    r, c, s = story, story.c, story.sender
    assert s is not None
    since = c.offsets()
    s.wait_accepted(10)
    t_cut = time.monotonic()
    r.lab.power_off("mx2")
    time.sleep(20)
    assert not took_over(c.log("mx1", since["mx1"])), "mx1 took over on its own"
    t_decl = time.monotonic()
    c.set_spec("mx1", fenced=("mx2",), nodes=("mx1",))
    wait_one(c, "mx1", "mx1 to take over", lambda t: lines(t, "start service postfix: ok"), since["mx1"], 400)
    s.wait_accepted(10)
    r.times["3 fenced: [mx2] -> postfix on mx1"] = time.monotonic() - t_decl
    s.stop()
    accepted = s.accepted()
    got = all_delivered(c, "mx1", accepted)
    dups = {n: k for n, k in got.items() if k > 1}
    gap, refused = s.outage(t_cut)
    r.sender = None
    FIGURES["mail: power cut, SMTP (swaks)"] = (
        f"outage {gap:.1f} s (of which {t_decl - t_cut:.0f} s until the operator declared mx2 fenced), {refused} "
        f"refused, {len(accepted)} answered 250 in all, all in mx1's maildir, {len(dups)} duplicated")
