"""5. Agent footprint: resident memory and CPU of an idle `reconciler run` holding 10,000
floating IPs (one-node spec, only floating_ips, drift check every 5 s, peer server up).

After it converged and settled, RSS (VmRSS) is sampled every second and CPU time
(utime + stime of /proc/PID/stat) is read per 10 s window, for a minute; per thread too
(/proc/PID/task/*/stat), to say which part of the agent spends it.  A second agent holding
10 addresses gives the fixed part (interpreter, imports, threads).
"""

from __future__ import annotations

import os
import time

from bench.harness import Report, SoloAgent, Stat, proc_cpu_s, proc_rss_bytes, python_child_of, solo_spec, write_atomic

RSS_TARGET_MB = 80.0
CPU_TARGET_PCT = 2.0
WINDOW_S = 10.0


def _threads(pid: int) -> dict[str, float]:
    """CPU seconds per thread, keyed by a role guessed from the thread's start order."""
    out: dict[str, float] = {}
    tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        name = s[s.find("(") + 1 : s.rfind(")")]
        fields = s.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        out[f"{tid}:{name}"] = cpu
    return out


def measure(report: Report, n_ips: int, seconds: float, target: bool) -> None:
    with SoloAgent("cluster: placeholder\n") as a:
        write_atomic(a.spec, solo_spec(n_ips, drift_s=5.0, secret_file=a.secret))
        a.start()
        a.wait_log(lambda line: line["msg"].startswith("mx1: converged"), 180)
        pid = python_child_of(a.proc.pid)
        time.sleep(6)  # one drift check past convergence: the steady state
        rss: list[float] = []
        cpu_windows: list[float] = []
        th0 = _threads(pid)
        t_start, c_start = time.monotonic(), proc_cpu_s(pid)
        t_w, c_w = t_start, c_start
        while time.monotonic() - t_start < seconds:
            time.sleep(1.0)
            rss.append(proc_rss_bytes(pid) / 2**20)
            now = time.monotonic()
            if now - t_w >= WINDOW_S - 0.05:
                c = proc_cpu_s(pid)
                cpu_windows.append(100 * (c - c_w) / (now - t_w))
                t_w, c_w = now, c
        total_s = time.monotonic() - t_start
        cpu_total = 100 * (proc_cpu_s(pid) - c_start) / total_s
        th1 = _threads(pid)
    r = Stat(rss)
    c = Stat(cpu_windows)
    label = f"idle agent, {n_ips:,} IPs, drift check 5 s, {total_s:.0f} s"
    report.add("5 footprint", f"{label}: RSS (1 s samples)", r.fmt("MB", digits=1), "", "",
               f"< {RSS_TARGET_MB:g} MB" if target else "", (r.hi < RSS_TARGET_MB) if target else None)
    report.add("5 footprint", f"{label}: CPU over the whole run", f"{cpu_total:.2f} % of a core",
               f"per {WINDOW_S:g} s window: {c.fmt('%', digits=2)}", "",
               f"< {CPU_TARGET_PCT:g}%" if target else "", (cpu_total < CPU_TARGET_PCT) if target else None)
    parts = []
    # Threads by start order: the loop, then the peer server, then the spec watcher (its
    # Rust inotify thread is named notify-rs).
    names = {0: "main loop (drift checks)", 1: "peer server", 2: "watchfiles (5 ms step)"}
    for i, k in enumerate(sorted(th1, key=lambda k: int(k.split(":")[0]))):
        role = names.get(i, k.split(":", 1)[1])
        parts.append(f"{role} [{k}] {100 * (th1[k] - th0.get(k, 0.0)) / total_s:.2f}%")
    report.note(f"5: per-thread CPU, {n_ips:,} IPs: " + "; ".join(parts))


def run(report: Report, quick: bool = False) -> None:
    seconds = 20.0 if quick else 60.0
    measure(report, 10_000, seconds, target=True)
    measure(report, 10, seconds / 2, target=False)
