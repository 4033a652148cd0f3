"""End-to-end tier: the real agent (`reconciler run`) inside the two lab VMs, on real DRBD 8.4,
PostgreSQL 15 and floating IPs on eth1, with the client writing from the host.

ONE lab session for the whole module; the scenarios run in order, each from the state the
previous one left (a failed scenario skips the ones after it), and the module fixture always
runs `lab down`:
  1 bring-up from the spec (mx1 Primary);
  2 switchover to mx2 by editing the file while two holders keep r0 busy on mx1 (a file
    open on the mount, then /dev/drbd0 itself): the agent reports the busy unmount and the
    (-12) and completes once the test kills the holders; no acknowledged write is lost;
  3 mx2's replication link cut: mx2 keeps serving; with the spec naming mx1, mx1 does not
    promote until the spec declares mx2 fenced;
  4 link restored: split brain reported with the recovery commands and nothing discarded;
    the test runs the reported commands as an operator would and the cluster converges.
RECONCILER_E2E_CAPTURE=DIR writes the real DRBD outputs seen to DIR (the source of
tests/fixtures/drbd/real/e2e/, see its README.md).  Timings are printed (pytest -s).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab.cluster import BASE, MOUNT, PG_BIN, PY, LabCluster, Writer, floating, last_state
from lab.lab import Lab
from lab.provision import DEVICE, RESOURCE, observe, provision
from lab.topology import DRBD_DISK, Layout
from reconciler.model import DrbdObs
from tests.conftest import need, need_lab

pytestmark = pytest.mark.slow

REPL = {"mx1": "10.0.0.1", "mx2": "10.0.0.2"}
KMSG = [PY, "-c", "from reconciler.observe.drbd_kernel import read_kmsg; print(*read_kmsg(), sep='\\n')"]
STATUS = {"sh_status": ["drbdsetup", "sh-status", RESOURCE], "events2": ["drbdsetup", "events2", "--now", RESOURCE],
          "proc_drbd": ["cat", "/proc/drbd"]}


def _need_lab() -> None:
    need_lab()
    need(os.path.exists(f"{PG_BIN}/pg_ctl"), f"needs PostgreSQL 15 in {PG_BIN} (the VMs share the host's root)")
    need(shutil.which("drbdadm") is not None, "needs drbd-utils")


@dataclass
class Run:
    lab: Lab
    c: LabCluster
    tmp: Path
    writer: Writer | None = None
    times: dict[str, float] = field(default_factory=dict)
    captured: list[tuple[str, str, list[str], int | None, str, str]] = field(default_factory=list)
    failed: str = ""
    acks_mx2_after_cut: set[int] = field(default_factory=set)

    def capture(self, fname: str, node: str, argv: list[str], step: str, ok_rcs: tuple[int, ...] = (0,)) -> str:
        """Run argv in the VM; keep its stdout (or its stderr when it failed) as fixture `fname`."""
        r = self.lab.exec(node, argv, timeout=60)
        assert r.rc in ok_rcs, f"{node}: {' '.join(argv)}: exit {r.rc}: {r.stderr}"
        text = r.stdout if r.rc == 0 else r.stderr
        self.captured.append((fname, node, argv, r.rc, step, text))
        return text

    def capture_text(self, fname: str, node: str, what: str, step: str, text: str) -> None:
        self.captured.append((fname, node, [what], None, step, text))

    def capture_state(self, state: str, step: str) -> None:
        for node in ("mx1", "mx2"):
            for src, argv in STATUS.items():
                self.capture(f"{state}.{node}.{src}.txt", node, argv, step)


def keep_evidence(r: Run, tmp: Path) -> None:
    """A lab session's teardown before `lab down`: stop the client, keep both agent logs (their
    tails printed when a scenario failed) and the consoles; a node that is off is skipped."""
    if r.writer is not None:
        r.writer.stop()
    for n in ("mx1", "mx2"):
        try:
            log = r.c.log(n)
            (tmp / f"agent-{n}.log").write_text(log)
            if r.failed:
                print(f"----- {n} agent log (last 60 lines; all in {tmp}) -----\n"
                      + "\n".join(log.splitlines()[-60:]))
        except Exception as e:  # noqa: BLE001 - a node may be off; the teardown goes on
            print(f"(no agent log from {n}: {e})")
    print(r.lab.keep_consoles(tmp))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    _need_lab()
    tmp = tmp_path_factory.mktemp("e2e")
    lab = Lab(Layout("rlabe2e", tmp / "lab"), owned=True)
    r = Run(lab, LabCluster(lab), tmp)
    t0 = time.monotonic()
    try:
        r.times["lab up"] = lab.up()
        t = time.monotonic()
        print(f"\n{provision(lab)}")
        r.times["provision"] = time.monotonic() - t
        r.c.build("mx1")
        r.times["build (initdb on mx1, files, spec)"] = r.c.timings["build_s"]
        r.c.start_agents()
        r.times["_start"] = time.monotonic()
        yield r
    finally:
        _write_captures(r)
        keep_evidence(r, tmp)
        t = time.monotonic()
        lab.down()
        r.times["lab down"] = time.monotonic() - t
        r.times["total"] = time.monotonic() - t0
        print("\ne2e timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in r.times.items() if not k.startswith("_"))
              + f"; in-VM reconciler CLI calls: {r.c.cli_calls} ({r.c.cli_seconds:.0f}s, run two at a time)")
    assert not lab.lay.journal.exists()


CAPTURE_README = """\
# Real DRBD 8.4 output seen by the end-to-end tier

Captured by `tests/test_e2e_lab.py` with `RECONCILER_E2E_CAPTURE=$PWD/tests/fixtures/drbd/real/e2e`
(as root: `RECONCILER_E2E_CAPTURE=... .venv/bin/python -m pytest -s tests/test_e2e_lab.py`), in the
two-VM lab (`lab/`: Debian kernel 6.1 with its in-tree DRBD 8.4.11, the host's
drbd-utils 9.22 through the read-only shared root, r0 from `python -m lab provision`:
protocol C, `fencing dont-care`, /dev/vda) while the real agents (`reconciler run`) ran the cluster
of `lab.cluster`: r0 mounted on /srv/hvmail on the Primary, PostgreSQL 15, floating IPs
on eth1, a client writing from the host.  These are the states the agents themselves went through:
Primary with a mounted filesystem, a Primary cut off while writing, a takeover declared with
`fenced:`, a split brain with the old Primary already Secondary, the operator's recovery.

Each file is the command's verbatim stdout when it exited 0, else its verbatim stderr; files
with no rc are the project's own output (agent log lines, `reconciler plan`), kept for reference.
`tests/test_drbd_real_e2e_fixtures.py` parses them.  The older captures one directory up were
made by `tests/drbd_capture.py` driving DRBD by hand.

"""


def _write_captures(r: Run) -> None:
    out = os.environ.get("RECONCILER_E2E_CAPTURE")
    if not out or not r.captured:
        return
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for fname, node, argv, rc, step, text in r.captured:
        (d / fname).write_text(text)
        cmd = argv[0] if rc is None else "`" + " ".join(shlex.quote(a) for a in argv) + "`"
        cmd = cmd.replace("|", "\\|")
        rows.append(f"| `{fname}` | {node} | {cmd} | {'' if rc is None else rc} | {step} |")
    head = "| file | node | command | rc | state / step |\n|---|---|---|---|---|\n"
    (d / "README.md").write_text(CAPTURE_README + head + "\n".join(rows) + "\n")


# ---- helpers ------------------------------------------------------------------------------------

def lab_cli(r: Run, verb: str, node: str) -> None:
    """`python -m lab cut|restore NODE`, as the operator's shell would run it (from the checkout)."""
    subprocess.run([sys.executable, "-m", "lab", "--name", r.lab.lay.name, "--state",
                    str(r.lab.lay.state), verb, node], check=True, timeout=60, cwd=Path(__file__).parents[1])


def wait_drbd(r: Run, what: str, ok, timeout: float = 120.0) -> dict[str, DrbdObs]:
    deadline = time.monotonic() + timeout
    while True:
        seen = {n: observe(r.lab, n) for n in ("mx1", "mx2")}
        if ok(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {seen}")
        time.sleep(0.5)


def owned(st: dict) -> set[str]:
    return {a["address"] for a in st["interfaces"]["eth1"]["addresses"] if a["owned"]}


def observed_status(r: Run, node: str, part: str, timeout: float = 90.0) -> dict:
    """`status --json` of `node` once it observed `part`: under software emulation a VM busy
    with a pg_rewind and a split brain can let one observation of PostgreSQL time out (the
    status then says so in `errors`); the test's claims are about the state, not that moment."""
    deadline = time.monotonic() + timeout
    while True:
        st = r.c.status(node)
        if st.get(part) is not None:
            return st
        print(f"{node}: status without {part}, retrying: {st.get('errors')}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{node}: no status observing {part} within {timeout:.0f} s: {st.get('errors')}")
        time.sleep(2)


def lines(log: str, *needles: str) -> list[str]:
    return [ln for ln in log.splitlines() if all(n in ln for n in needles)]


def wait_streaming(r: Run, standby: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        res = r.c.psql(standby, "SELECT status, sender_host FROM pg_stat_wal_receiver")
        if res.ok and res.stdout.strip().startswith("streaming|"):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{standby} is not streaming: {res.stdout} {res.stderr}")
        time.sleep(0.5)


def assert_cluster(r: Run, primary: str) -> dict[str, dict]:
    """The whole converged state, from one `reconciler status --json` per node."""
    other = "mx2" if primary == "mx1" else "mx1"
    wait_streaming(r, other)
    st = r.c.statuses()
    p, s = st[primary], st[other]
    assert p["errors"] == [] and s["errors"] == []
    dp, ds = p["drbd"][RESOURCE], s["drbd"][RESOURCE]
    assert (dp["role"], dp["peer_role"], dp["connection"], dp["disk"], dp["peer_disk"], dp["split_brain"]) == (
        "Primary", "Secondary", "Connected", "UpToDate", "UpToDate", False)
    assert (ds["role"], ds["peer_role"], ds["connection"], ds["disk"], ds["peer_disk"], ds["split_brain"]) == (
        "Secondary", "Primary", "Connected", "UpToDate", "UpToDate", False)
    assert p["mounts"][MOUNT]["source"] == DEVICE and p["mounts"][MOUNT]["fstype"] == "ext4"
    assert MOUNT not in s["mounts"]
    assert p["postgres"]["running"] and p["postgres"]["in_recovery"] is False
    assert s["postgres"]["running"] and s["postgres"]["in_recovery"] is True
    assert s["postgres"]["conninfo_host"] == REPL[primary]
    assert owned(p) == set(floating(r.lab.lay.mgmt_net)) and owned(s) == set()
    assert p["services"]["app"]["active"] and not s["services"]["app"]["active"]
    return st


# ---- the scenarios ------------------------------------------------------------------------------

def test_1_bring_up_from_the_spec(story: Run) -> None:
    r, c = story, story.c
    r.times["1 bring-up: agents started -> both converged"] = c.wait_converged(timeout=600)
    st = assert_cluster(r, "mx1")
    assert st["mx1"]["postgres"]["timeline"] == 1
    # the service runs with its working directory on the DRBD mount
    assert c.sh("mx1", f"readlink /proc/$(cat {BASE}/app.pid)/cwd").stdout.strip() == MOUNT
    log2 = c.log("mx2")
    assert lines(log2, "clone from 10.0.0.1:5432 (pg_basebackup): ok"), "mx2 was not cloned by its agent"
    r.capture_state("converged_mx1_primary", "1: bring-up converged, mx1 Primary with r0 mounted")
    r.writer = Writer(c.vip)
    r.times["1 first 20 writes through the floating IP"] = r.writer.wait_acks(20)


def test_2_switchover_with_the_mount_held_open(story: Run) -> None:
    r, c, w = story, story.c, story.writer
    assert w is not None
    holder_a = c.lab.spawn("mx1", ["sh", "-c", f"exec 3>>{MOUNT}/held-by-a; exec sleep 3600"])
    holder_b = c.lab.spawn("mx1", ["sh", "-c", f"exec 3<{DEVICE}; exec sleep 3600"])
    time.sleep(1)
    fds = c.sh("mx1", f"readlink /proc/{holder_a}/fd/3 /proc/{holder_b}/fd/3").stdout.split()
    assert fds == [f"{MOUNT}/held-by-a", DEVICE]
    since = c.offsets()
    t0 = time.monotonic()
    c.set_spec("mx2")
    try:
        busy = c.wait_log("mx1 to report the busy unmount",
                          lambda logs: lines(logs["mx1"], "unmount /srv/hvmail: failed"), since, 240)
        t_busy = time.monotonic()
        log1 = c.log("mx1", since["mx1"])
        assert log1.index("stop service app: ok") < log1.index("unmount /srv/hvmail: failed"), \
            "the service was not stopped before the unmount"
        assert "busy" in busy[0] and f" {holder_a} " in busy[0] and "sleep" in busy[0], busy[0]
        c.sh("mx1", f"kill {holder_a}")
        held = c.wait_log("mx1 to report (-12) on demotion, twice (bounded retries, then again after a back-off)",
                          lambda logs: len(x := lines(logs["mx1"], "drbd r0: Primary -> Secondary: failed")) >= 2 and x,
                          since, 240)
        assert "(-12) Device is held open by someone" in held[0], held[0]
        assert "fuser -vm /dev/drbd0" in held[0] and f"pid {holder_b}" in held[0], held[0]
        r.capture("err_secondary_held_open.rc11.mx1.txt", "mx1", ["drbdadm", "secondary", RESOURCE],
                  "2: mx1 unmounted, /dev/drbd0 still held open by a process (what the agent got)", ok_rcs=(11,))
        r.capture_text("agent_log_held_open.mx1.txt", "mx1", "the agent's log lines",
                       "2: the agent's reports of the busy unmount and of the (-12) demotion",
                       "\n".join(busy[:1] + held[:1]) + "\n")
        t_held = time.monotonic()
    finally:
        c.sh("mx1", f"kill {holder_a} {holder_b} 2>/dev/null || true")
    r.times["2 edit -> busy unmount reported"] = t_busy - t0
    r.times["2 holder A killed -> (-12) reported twice"] = t_held - t_busy
    r.times["2 holder B killed -> both converged"] = c.wait_converged(since, timeout=400)
    w.wait_acks(20)
    assert assert_cluster(r, "mx2")["mx2"]["postgres"]["timeline"] == 2
    acks = w.acks()
    present = c.rows("mx2")
    lost = [i for i, _ in acks if i not in present]
    assert acks and not lost, f"{len(lost)} acknowledged writes lost in the switchover: {lost[:10]}"
    gap = "2 longest write gap (includes the hold)"
    r.times[gap] = Writer.longest_gap(acks, t0 - 1)
    print(f"\nswitchover: {len(acks)} acknowledged writes, none lost; longest gap {r.times[gap]:.1f}s")
    r.capture_state("converged_mx2_primary", "2: after the switchover, mx2 Primary with r0 mounted")


def test_3_link_cut_primary_keeps_serving_and_secondary_waits_for_fencing(story: Run) -> None:
    r, c, w = story, story.c, story.writer
    assert w is not None
    t0 = time.monotonic()
    lab_cli(r, "cut", "mx2")
    wait_drbd(r, "both to notice the cut", lambda s: all(o.connection == "WFConnection" for o in s.values()))
    r.times["3 cut -> DRBD WFConnection on both"] = time.monotonic() - t0
    r.capture_state("cut_mx2_primary", "3: mx2's replication link cut, mx2 Primary (mounted, writing)")
    r.capture("dmesg_cut.mx2.txt", "mx2", ["dmesg"], "3: kernel log on mx2 after the cut")
    n_before = len(w.acks())
    w.wait_acks(20)  # the Primary keeps serving: these commits were acknowledged by mx2 after the cut
    c.sh("mx2", f"echo written-by-mx2-after-the-cut > {MOUNT}/mx2-after-cut; sync")
    since = c.offsets()
    c.set_spec("mx1")
    # mx2 steps down on its own (it needs nobody for that); mx1 must not promote without mx2's state
    # (its last demotion step is DRBD Secondary: PostgreSQL stops first, then the addresses go)
    c.wait_log("mx2 to step down and mx1 to wait for fencing",
               lambda logs: lines(logs["mx2"], "fast shutdown: ok") and lines(logs["mx2"], "Primary -> Secondary: ok")
               and lines(logs["mx1"], "waiting:", "fenced: [mx2]"), since, 300)
    r.acks_mx2_after_cut = {i for i, _ in w.acks()[n_before:]}
    st = c.statuses()  # and a while later (these calls take tens of seconds in the VMs) it still has not
    d1 = st["mx1"]["drbd"][RESOURCE]
    assert (d1["role"], d1["connection"]) == ("Secondary", "WFConnection")
    assert MOUNT not in st["mx1"]["mounts"] and owned(st["mx1"]) == set()
    assert st["mx1"]["postgres"]["in_recovery"] is True and not st["mx1"]["services"]["app"]["active"]
    assert st["mx2"]["drbd"][RESOURCE]["role"] == "Secondary" and owned(st["mx2"]) == set()
    assert not st["mx2"]["postgres"]["running"]
    p = c.plan("mx1")
    assert p.rc == 2 and "fenced: [mx2]" in p.stdout, p.stdout
    r.capture_text("plan_waiting_for_fencing.mx1.txt", "mx1", "reconciler plan", "3: spec names mx1, mx2 unreachable",
                   p.stdout)
    log1 = c.log("mx1", since["mx1"])
    assert not lines(log1, "Secondary -> Primary: ok"), "mx1 promoted without the fencing declaration"
    since = c.offsets()
    t1 = time.monotonic()
    c.set_spec("mx1", fenced=("mx2",))
    c.wait_log("mx1 to take over", lambda logs: lines(logs["mx1"], "start service app: ok"), since, 300)
    r.times["3 fenced: [mx2] -> mx1 serving"] = time.monotonic() - t1
    w.wait_acks(20)
    c.sh("mx1", f"echo written-by-mx1-after-fencing > {MOUNT}/mx1-after-fencing; sync")
    st1 = c.status("mx1")
    d1 = st1["drbd"][RESOURCE]
    assert (d1["role"], d1["connection"]) == ("Primary", "WFConnection")
    assert st1["postgres"]["in_recovery"] is False and st1["postgres"]["timeline"] == 3
    assert owned(st1) == set(floating(r.lab.lay.mgmt_net)) and st1["services"]["app"]["active"]
    r.capture_state("takeover_while_cut", "3: still cut; mx1 promoted after `fenced: [mx2]`; mx2 (Primary and "
                                          "written to after the cut) stepped down")


def parse_recovery(note: str, marker: str) -> list[tuple[str, str]]:
    """'… To resolve: on mx2 (…): cmd; cmd; on mx1: cmd' -> [(node, cmd), …] in order."""
    text = note.split(marker, 1)[1]
    out = []
    for part in re.split(r";\s*(?=on [A-Za-z0-9_.-]+[ :])", text):
        m = re.match(r"on ([A-Za-z0-9_.-]+)(?: \([^)]*\))?: (.*)", part.strip())
        assert m, part
        out += [(m[1], cmd.strip()) for cmd in m[2].split(";") if cmd.strip()]
    return out


def on_disk(r: Run, node: str, name: str) -> bool:
    """Whether /name exists in the ext4 on node's DRBD backing disk (read directly, O_DIRECT)."""
    res = r.lab.exec(node, ["debugfs", "-D", "-c", "-R", f"stat /{name}", DRBD_DISK], timeout=60)
    return "File not found" not in res.stderr + res.stdout and "Inode:" in res.stdout


def test_4_split_brain_reported_then_resolved_by_the_operator(story: Run) -> None:
    r, c, w = story, story.c, story.writer
    assert w is not None
    since = c.offsets()
    t0 = time.monotonic()
    lab_cli(r, "restore", "mx2")
    wait_drbd(r, "the split brain (both StandAlone)", lambda s: all(o.connection == "StandAlone" for o in s.values()),
              timeout=180)
    r.times["4 restore -> split brain (StandAlone)"] = time.monotonic() - t0
    r.capture_state("split_brain", "4: link restored after both were Primary: split brain")
    for n in ("mx1", "mx2"):
        r.capture(f"kmsg_split_brain.{n}.txt", n, KMSG, "4: /dev/kmsg drbd records (read_kmsg) after the split brain")
    waiting = c.wait_log("both agents to report the split brain with the recovery commands",
                         lambda logs: all(lines(t, "waiting:", "split brain", "to resolve:") for t in logs.values())
                         and {n: lines(t, "waiting:", "to resolve:")[-1] for n, t in logs.items()}, since, 300)
    r.times["4 restore -> both agents report the split brain"] = time.monotonic() - t0
    for n, line in waiting.items():
        r.capture_text(f"agent_log_split_brain.{n}.txt", n, "the agent's log line",
                       "4: the split brain, as the agent logs it", line + "\n")
    cmds = parse_recovery(waiting["mx1"], "to resolve: ")
    assert cmds == [("mx2", "drbdadm disconnect r0"), ("mx2", "drbdadm secondary r0"),
                    ("mx2", "drbdadm connect --discard-my-data r0"), ("mx1", "drbdadm connect r0")], cmds
    assert parse_recovery(waiting["mx2"], "to resolve: ") == cmds
    st = c.both(lambda n: observed_status(r, n, "postgres"))
    assert st["mx1"]["drbd"][RESOURCE]["split_brain"] and st["mx2"]["drbd"][RESOURCE]["split_brain"]
    assert st["mx1"]["postgres"]["in_recovery"] is False and owned(st["mx1"]) == set(floating(r.lab.lay.mgmt_net))  # mx1 goes on serving
    plans = c.both(c.plan)
    for n, p in plans.items():
        assert p.rc == 2, p.stdout
        found = [ln for ln in p.stdout.splitlines() if "split brain detected; nothing is discarded automatically" in ln]
        assert found and parse_recovery(found[0], "To resolve: ") == cmds, p.stdout
        r.capture_text(f"plan_split_brain.{n}.txt", n, "reconciler plan", "4: the plan in the split brain", p.stdout)
    # nothing was discarded: each side still has what it wrote to r0 after the split
    assert c.sh("mx1", f"cat {MOUNT}/mx1-after-fencing").stdout.strip() == "written-by-mx1-after-fencing"
    assert not c.sh("mx1", f"test -e {MOUNT}/mx2-after-cut", check=False).ok
    assert on_disk(r, "mx2", "mx2-after-cut") and not on_disk(r, "mx2", "mx1-after-fencing")
    assert wait_drbd(r, "still StandAlone", lambda s: all(o.connection == "StandAlone" for o in s.values()))
    # (PostgreSQL on mx2 is another matter: `fenced: [mx2]` is the operator's consent to rewind it, and the
    # agent's log line says what the rewind discards.)
    # the operator runs the reported commands, one by one, as printed
    t1 = time.monotonic()
    for node, cmd in cmds:
        res = r.lab.exec(node, shlex.split(cmd), timeout=60)
        step = f"4: operator recovery step `{cmd}` on {node}"
        name = re.sub(r"[^a-z0-9]+", "_", cmd.replace("drbdadm ", "op_").lower()).strip("_")
        r.captured.append((f"{name}.rc{res.rc}.{node}.txt", node, shlex.split(cmd), res.rc, step,
                           res.stdout if res.rc == 0 else res.stderr))
        if cmd.startswith("drbdadm disconnect") and res.rc != 0:
            # already StandAlone after the split brain: DRBD says so, and the next steps still apply
            assert "(162) Invalid configuration request" in res.stderr or "unknown connection" in res.stderr, res.stderr
            continue
        assert res.ok, f"{node}: {cmd}: exit {res.rc}: {res.stderr}"
    wait_drbd(r, "Connected UpToDate/UpToDate after the resync",
              lambda s: all((o.connection, o.disk, o.peer_disk) == ("Connected", "UpToDate", "UpToDate")
                            for o in s.values()), timeout=180)
    r.times["4 operator commands -> DRBD Connected, UpToDate"] = time.monotonic() - t1
    for n in ("mx1", "mx2"):
        r.capture(f"kmsg_split_brain_resolved.{n}.txt", n, KMSG, "4: /dev/kmsg drbd records after the manual recovery")
    since = c.offsets()
    c.set_spec("mx1")  # the operator clears `fenced:` once mx2 has rejoined
    r.times["4 -> both converged (mx2 rewound, streaming)"] = c.wait_converged(timeout=400)
    rewound = lines(c.log("mx2"), "pg_rewind from 10.0.0.1:5432", ": ok")
    assert rewound and "pg_rewind discards WAL after the fork" in rewound[0], "mx2 was not rewound"
    assert last_state(c.log("mx1", since["mx1"])) in ("", "converged")
    assert_cluster(r, "mx1")
    # the operator chose mx1's data: mx2's post-split file is gone from its disk, mx1's is there
    assert on_disk(r, "mx2", "mx1-after-fencing") and not on_disk(r, "mx2", "mx2-after-cut")
    w.wait_acks(10)
    acks = w.stop()
    on_mx1 = c.rows("mx1")
    after = [i for i, _ in acks if i > max(r.acks_mx2_after_cut, default=0)]
    assert after and all(i in on_mx1 for i in after), "writes acknowledged by mx1 after the takeover were lost"
    deadline = time.monotonic() + 60
    while not c.rows("mx2") >= set(after):  # the rewound standby has them all, once it has replayed
        assert time.monotonic() < deadline, "mx2 did not replicate mx1's rows"
        time.sleep(1)
    lost = sorted(i for i in r.acks_mx2_after_cut if i not in on_mx1)
    print(f"\nfencing: {len(lost)} of {len(r.acks_mx2_after_cut)} writes acknowledged by mx2 after the cut are not "
          f"on mx1 (the loss `fenced: [mx2]` accepts); {len(after)} writes after the takeover, none lost")
    r.capture_state("recovered", "4: after the manual recovery: mx1 Primary, Connected, UpToDate")
