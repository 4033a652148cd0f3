"""3. Planned switchover: write outage seen by a client, and time to full convergence.

The real two-node cluster of demo/cluster.py (namespaces on a bridge, PostgreSQL 15 per
node, the real agents with JSON logs), 1,000 floating IPs, and the test suite's Writer
client committing one row at a time through the floating IP.  Each switchover edits
`primary:` in both nodes' spec files (atomic rename); the outage is the longest gap between
two acknowledged writes around it (last ack before, first ack after); convergence is the
last "converged" log line of either agent after the edit.

The floor, in the same run and interleaved round by round: two plain PostgreSQL 15
instances on 127.0.0.1 (tests/pgcluster.py's PgLab), by hand with the product's drivers:
write → `execute.postgres.stop` (CHECKPOINT + `pg_ctl stop -m fast`) on the primary →
`pg_promote(true, 60)` on the standby → connect + write there.  The product also runs a
CHECKPOINT right after the promotion (pg_control's timeline, for pg_rewind): its cost is
shown separately.  Then the old primary rejoins as a standby for the next round.

The breakdown comes from the agents' logs (each action's start = ts - duration_s) and the
client's acknowledgements, all on one clock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from bench.harness import Report, Stat, kill_group, ratio_stat

N_IPS = 1000
OUTAGE_TARGET_S = 1.0
FLOOR_FACTOR = 3.0


# ---- the PostgreSQL floor ------------------------------------------------------------------------
class Floor:
    def __init__(self) -> None:
        from tests.pgcluster import PgLab

        self.lab = PgLab()
        try:
            a = self.lab.init_primary("a")
            a.sql("CREATE TABLE w (id bigint)")
            b = self.lab.add_standby("b", a)
        except BaseException:
            self.lab.close()
            raise
        self.nodes = [a, b]
        self.primary = 0
        self.i = 0

    def round(self) -> dict[str, float]:
        from reconciler.execute import postgres as pgx
        from tests.pgcluster import wait_until_streaming

        old, new = self.nodes[self.primary], self.nodes[1 - self.primary]
        wait_until_streaming(new)
        self.i += 1
        old.sql("INSERT INTO w VALUES (%s)", (self.i,))
        t_last = time.monotonic()
        pgx.stop(old.cfg)  # CHECKPOINT, then pg_ctl stop -m fast
        t_stopped = time.monotonic()
        ok = new.sql("SELECT pg_promote(true, 60)")[0][0]
        t_promoted = time.monotonic()
        if not ok:
            raise RuntimeError("pg_promote did not finish")
        self.i += 1
        new.sql("INSERT INTO w VALUES (%s)", (self.i,))
        t_first = time.monotonic()
        pgx.checkpoint(new.cfg)
        t_ckpt = time.monotonic()
        new.sql("SELECT 1")  # what each of the product's SQL statements pays first: a new connection
        t_conn = time.monotonic()
        self.primary = 1 - self.primary
        pgx.start_standby(old.cfg, "127.0.0.1", new.cfg.port, old.name)
        wait_until_streaming(old)
        return {"floor": t_first - t_last, "stop": t_stopped - t_last, "promote": t_promoted - t_stopped,
                "first write": t_first - t_promoted, "post-promotion CHECKPOINT": t_ckpt - t_first,
                "a new connection + SELECT 1": t_conn - t_ckpt}

    def close(self) -> None:
        self.lab.close()


def FastWriter(c, mode: str = "fast", base: int = 10**9):  # noqa: ANN001, ANN201, N802
    """The test suite's Writer class, running bench/_fastwriter.py (ids from `base`: same table)."""
    from demo.cluster import PY, ROOT_DIR, VIP
    from tests.test_integration import Writer

    class _Fast(Writer):
        def __init__(self, c) -> None:  # noqa: ANN001
            self.c = c
            self.out = os.path.join(c.root, f"{mode}writes-{time.monotonic_ns()}.log")
            self.stop_file = self.out + ".stop"
            self.p = subprocess.Popen(
                ["ip", "netns", "exec", c.ns["cl"], PY, "-m", "bench._fastwriter", VIP,  # -m: finds `demo` from cwd
                 self.out, self.stop_file, str(base), mode],
                cwd=ROOT_DIR, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)

    return _Fast(c)


# ---- the cluster ---------------------------------------------------------------------------------
def _json_twonode(n_ips: int, services: bool = True):  # noqa: ANN202
    import re

    from demo.cluster import PY, ROOT_DIR, TwoNode

    class JsonTwoNode(TwoNode):
        """TwoNode whose agents log JSON (ts with ms, duration_s per action); without
        `services`, its spec has no `services:` (the fixture's service is a Python script;
        its status check, part of every observation, is `pgrep -F`, about as cheap as
        `systemctl is-active`; its start and stop are one interpreter start each)."""

        def spec_text(self, primary: str, fenced: tuple[str, ...] = (), drift_s: float = 1.0) -> str:
            text = super().spec_text(primary, fenced, drift_s)
            return text if services else re.sub(r"(?m)^services:\n(?:  .*\n)+", "", text)

        def start_agent(self, node: str) -> None:
            log = open(os.path.join(self.root, node, "agent.log"), "a")
            self.agents[node] = subprocess.Popen(
                ["ip", "netns", "exec", self.ns[node], PY, "-m", "reconciler", "run", self.spec_path(node),
                 "--node", node, "--log-format", "json"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT_DIR, start_new_session=True)
            log.close()

        def lines(self, node: str) -> list[dict]:
            out = []
            with open(os.path.join(self.root, node, "agent.log")) as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
            return out

    return JsonTwoNode(n_ips=n_ips)


def _is_converged(node: str, line: dict) -> bool:
    return line.get("msg", "").startswith(f"{node}: converged")


def _is_reload(line: dict) -> bool:
    return any(k in line.get("msg", "") for k in ("now reconciling", "spec changed"))


def _gap(acks: list[tuple[int, float]], t_mono: float, off: float, t_wall: float) -> tuple:
    """(longest gap, last ack before it, first ack after it), seconds after the edit."""
    window = [t + off - t_wall for _, t in acks if t >= t_mono - 1.0]
    gaps = [(b - a, a, b) for a, b in zip(window, window[1:])]
    return max(gaps) if gaps else (None, None, None)


def _analyse(c, frm: str, to: str, marks: dict[str, int], t_wall: float, t_mono: float,  # noqa: ANN001
             acks: list[tuple[int, float]], fast_acks: list[tuple[int, float]]) -> dict[str, float | None]:
    """Everything in seconds after the edit, on the wall clock of the agents' logs."""
    off = t_wall - t_mono  # monotonic (client acks) -> wall (agent logs)
    ev: dict[str, dict[str, tuple[float, float]]] = {}
    conv: dict[str, float] = {}
    reload: dict[str, float] = {}
    timeline: list[tuple[float, str]] = []
    for n in (frm, to):
        ev[n] = {}
        for line in c.lines(n)[marks[n]:]:
            ts = line["ts"] - t_wall
            if _is_reload(line) and n not in reload:
                reload[n] = ts
                timeline.append((ts, f"{n} spec reloaded"))
            if _is_converged(n, line):
                conv[n] = ts
                timeline.append((ts, f"{n} converged"))
            if "waiting" in line:
                timeline.append((ts, f"{n} waiting: {'; '.join(line['waiting'])[:90]}"))
            if "action" in line and "duration_s" in line:
                start = ts - line["duration_s"]
                ev[n].setdefault(line["action"], (start, ts))
                timeline.append((start, f"{n} {line['action']} starts ({line['duration_s'] * 1000:.0f} ms, {line['result']})"))
    outage, last_before, first_after = _gap(acks, t_mono, off, t_wall)
    f_outage, f_last, f_first = _gap(fast_acks, t_mono, off, t_wall)
    if last_before is not None:
        timeline += [(last_before, "Writer: last ack before"), (first_after, "Writer: first ack after")]
    if f_last is not None:
        timeline += [(f_last, "fast client: last ack before"), (f_first, "fast client: first ack after")]

    def at(node: str, action: str, end: bool = False) -> float | None:
        e = ev.get(node, {}).get(action)
        return None if e is None else e[1 if end else 0]

    def dur(node: str, action: str) -> float | None:
        e = ev.get(node, {}).get(action)
        return None if e is None else e[1] - e[0]

    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a

    return {
        "outage": outage,
        "fast outage": f_outage,
        "converged": max(conv.values()) if len(conv) == 2 else None,
        "timeline": sorted(timeline),  # type: ignore[dict-item]
        "edit → old primary reloaded the spec": reload.get(frm),
        "edit → new primary reloaded the spec": reload.get(to),
        "last ack before, after the edit": last_before,
        "old: stop_service": dur(frm, "stop_service"),
        "old: remove_addresses (1,000)": dur(frm, "remove_addresses"),
        "old: pg_stop (CHECKPOINT + fast stop)": dur(frm, "pg_stop"),
        "old pg_stop done → new pg_promote starts": diff(at(frm, "pg_stop", True), at(to, "pg_promote")),
        "new: pg_promote (+ CHECKPOINT)": dur(to, "pg_promote"),
        "new pg_promote done → add_addresses starts": diff(at(to, "pg_promote", True), at(to, "add_addresses")),
        "new: add_addresses (1,000)": dur(to, "add_addresses"),
        "add_addresses done → Writer's first ack": diff(at(to, "add_addresses", True), first_after),
        "add_addresses done → fast client's first ack": diff(at(to, "add_addresses", True), f_first),
        "VIP on neither node (old remove_addresses starts → new add_addresses done, if after)": _pos(
            diff(at(frm, "remove_addresses"), at(to, "add_addresses", True))),
        "VIP on both, the old serving nothing (new add_addresses done → old remove_addresses starts)": _pos(
            diff(at(to, "add_addresses", True), at(frm, "remove_addresses"))),
    }


def _pos(x: float | None) -> float | None:
    return None if x is None else max(0.0, x)


def run(report: Report, quick: bool = False) -> None:
    rounds = 2 if quick else 6
    floor = Floor()
    try:
        run_variant(report, floor, rounds, services=True)
        run_variant(report, floor, rounds, services=False)
    finally:
        floor.close()


def run_variant(report: Report, floor: Floor, rounds: int, services: bool) -> None:
    from demo.cluster import NODES, wait_for
    from tests.test_integration import Writer, rows_on

    name = "3 switchover" if services else "3 switchover, no service"
    c = None
    results: list[dict] = []
    floors: list[dict[str, float]] = []
    try:
        c = _json_twonode(N_IPS, services)
        c.build("mx1")
        for n in NODES:
            c.start_agent(n)
        c.wait_converged(300)
        if services:
            _pg_observe_cost(report, c)
        w = Writer(c)
        fw = FastWriter(c)
        old_acks: list[tuple[int, float]] = []
        hung: list[str] = []
        try:
            w.wait_acks(50, timeout=60)
            fw.wait_acks(50, timeout=60)
            for i in range(rounds):
                floors.append(floor.round())
                to = "mx2" if i % 2 == 0 else "mx1"
                frm = "mx1" if to == "mx2" else "mx2"
                w.wait_acks(20)
                fw.wait_acks(20)
                marks = {n: len(c.lines(n)) for n in NODES}
                t_wall, t_mono = time.time(), time.monotonic()
                c.set_primary(to)
                wait_for(lambda marks=marks: all(any(_is_converged(n, x) for x in c.lines(n)[marks[n]:]) for n in NODES),
                         120, "both agents converged", every=0.05)
                try:
                    fw.wait_acks(20, timeout=60)
                except AssertionError as e:
                    raise RuntimeError(f"{e}; {_diagnose(c, w, fw, t_mono)}") from None
                hung_now = False
                try:
                    w.wait_acks(20, timeout=20)
                except AssertionError:
                    # The Writer's request was in flight when the old primary dropped the VIP: the
                    # reply and the FIN can no longer leave that node (no local source address),
                    # and the client waits for TCP keepalive (2 h by default).  Replace it.
                    hung_now = True
                    hung.append(f"switchover {i + 1}: {_diagnose(c, w, fw, t_mono)}")
                    old_acks += w.acks()
                    kill_group(w.p, signal.SIGKILL)
                    w = FastWriter(c, "plain", 10**8 * (len(hung)))
                    w.wait_acks(20, timeout=60)
                c.wait_converged(120)  # the harness's own check: `plan` exits 0 on both nodes
                results.append(_analyse(c, frm, to, marks, t_wall, t_mono, old_acks + w.acks(), fw.acks()))
                if hung_now:  # the gap is the replacement's start, not the cluster's
                    results[-1]["outage"] = results[-1]["add_addresses done → Writer's first ack"] = None
                wo = results[-1]["outage"]
                print(f"  {name} {i + 1} -> {to}: outage {'HUNG' if wo is None else f'{wo:.3f} s'} (fast client "
                      f"{results[-1]['fast outage']:.3f} s), floor {floors[-1]['floor']:.3f} s, "
                      f"converged {results[-1]['converged']:.3f} s", file=sys.stderr, flush=True)
        finally:
            acks = old_acks + w.stop() + fw.stop()
        final = "mx2" if rounds % 2 == 1 else "mx1"
        present = rows_on(c, final)
        lost = [i for i, _ in acks if i not in present]
    finally:
        if c is not None:
            c.close()

    pairs = [(r["outage"], fl_["floor"]) for r, fl_ in zip(results, floors) if r["outage"] is not None]
    out = [a for a, _ in pairs]
    fl = [f["floor"] for f in floors]
    if not out:
        raise RuntimeError(f"the Writer hung in every switchover: {hung}")
    o, f = Stat(out), Stat(fl)
    ratio = ratio_stat(out, [b for _, b in pairs])
    svc = "" if services else ", spec without the fixture's service"
    report.add(name, f"write outage (the Writer client), {N_IPS:,} IPs, {rounds} switchovers{svc}", o.fmt("s"),
               f"PG floor (CHECKPOINT, fast stop, promote, write) {f.fmt('s')}", ratio.fmt("×", digits=2),
               f"< {OUTAGE_TARGET_S:g} s and ≤ {FLOOR_FACTOR:g}× floor",
               o.median < OUTAGE_TARGET_S and ratio.median <= FLOOR_FACTOR)
    report.add(name, "the Writer hung after a switchover (request in flight when the VIP left)",
               f"{len(hung)} of {len(results)}", "", "", "0", not hung)
    for h in hung:
        report.note(f"{name}: Writer hung, {h}")
    fo = [r["fast outage"] for r in results]
    fr = ratio_stat(fo, fl)
    report.add(name, "write outage, fast-retry client (no TCP SYN backoff)", Stat(fo).fmt("s"),
               f"PG floor {f.fmt('s')}", fr.fmt("×", digits=2))
    report.add(name, "edit → both nodes converged", Stat([r["converged"] for r in results]).fmt("s"))
    report.add(name, f"acknowledged writes lost (of {len(acks):,})", str(len(lost)), "", "", "0", not lost)
    if services:
        for k in ("stop", "promote", "first write", "post-promotion CHECKPOINT", "a new connection + SELECT 1"):
            report.add(name, f"  floor: {k}", Stat([x[k] for x in floors]).fmt("ms", 1000, 0))
    for k in results[0]:
        if k in ("outage", "fast outage", "converged", "timeline"):
            continue
        vals = [r[k] for r in results if r.get(k) is not None]
        if vals:
            report.add(name, f"  {k}", Stat(vals).fmt("ms", 1000, 0))
    mid = sorted(results, key=lambda r: r["fast outage"])[len(results) // 2]
    report.note(f"{name}: timeline of the median switchover (ms after the edit): "
                + "; ".join(f"{t * 1000:+.0f} {what}" for t, what in mid["timeline"]))


def _diagnose(c, w, fw, t_mono: float) -> str:  # noqa: ANN001
    """Why a client stopped writing: its last acks, who holds the VIP, the client's neighbour entry."""
    from demo.cluster import VIP, in_ns

    now = time.monotonic()
    parts = []
    for name, x in (("Writer", w), ("fast client", fw)):
        a = x.acks()
        parts.append(f"{name}: {len(a)} acks, last {now - a[-1][1]:.1f} s ago" if a else f"{name}: no acks")
        parts.append(f"{name} alive: {x.p.poll() is None}")
    for n in ("mx1", "mx2"):
        out = in_ns(c.ns[n], "ip", "-o", "addr", "show", "dev", "eth0", check=False).stdout
        parts.append(f"{n} holds VIP: {f' {VIP}/' in out}")
    parts.append("cl neigh: " + in_ns(c.ns["cl"], "ip", "neigh", "show", VIP, check=False).stdout.strip())
    parts.append("cl sockets: " + " | ".join(
        in_ns(c.ns["cl"], "ss", "-tno", "dst", VIP, check=False).stdout.strip().splitlines()[1:4]))
    return "; ".join(parts)


def _pg_observe_cost(report: Report, c) -> None:  # noqa: ANN001
    """For 2: what PostgreSQL (and the service) add to an observation, on the real node."""
    from reconciler.netlink import run_in_netns
    from reconciler.observe.net import read_interfaces
    from reconciler.observe.node import observe_node
    from reconciler.observe.postgres import read_postgres
    from reconciler.observe.service import read_services
    from reconciler.spec.load import load_spec

    spec = load_spec(c.spec_path("mx1"))

    def go() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"node": [], "pg": [], "net": [], "svc": []}
        for _ in range(11):
            for k, fn in (("node", lambda: observe_node(spec, "mx1")),
                          ("pg", lambda: read_postgres(spec.model.postgres)),
                          ("net", lambda: read_interfaces(sorted(spec.addresses))),
                          ("svc", lambda: read_services(spec.model.services))):
                t0 = time.perf_counter()
                fn()
                out[k].append(time.perf_counter() - t0)
        return out

    m = run_in_netns(c.ns["mx1"], go)
    report.add("2 no-op cycle", f"observe, two-node primary: {N_IPS:,} IPs + PostgreSQL + 1 service",
               Stat(m["node"]).fmt("ms", 1000, 1))
    report.add("2 no-op cycle", "  of which PostgreSQL (pg_controldata + SQL)", Stat(m["pg"]).fmt("ms", 1000, 1))
    report.add("2 no-op cycle", f"  of which interfaces ({N_IPS:,} IPs)", Stat(m["net"]).fmt("ms", 1000, 1))
    report.add("2 no-op cycle", "  of which service status (the fixture's Python helper, one process)",
               Stat(m["svc"]).fmt("ms", 1000, 1))
