"""Run every benchmark and print one table:  .venv/bin/python -m bench  (or bench/run).

    --only ip,noop,switchover,edit,footprint,takeover   a subset (comma-separated)
    --quick                                     fewer repeats (a smoke run, not for RESULTS.md)
    --no-write                                  do not rewrite bench/RESULTS.md (RESULTS-<subset>.md with --only)

Needs root (network namespaces), iproute2 and PostgreSQL 15 for the switchover.  Every
benchmark cleans up the namespaces and processes it starts, even when it fails; a failing
benchmark becomes an ERROR row and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

from bench.harness import ROOT, Report, machine, need_root, table

BENCHES = {  # key -> module
    "ip": "bench.ip_convergence",
    "noop": "bench.noop_cycle",
    "switchover": "bench.switchover",
    "edit": "bench.edit_latency",
    "footprint": "bench.footprint",
    "takeover": "bench.takeover",
}


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--only", default=",".join(BENCHES))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    why = need_root()
    if why:
        print(f"bench: {why}", file=sys.stderr)
        return 1
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in BENCHES]
    if unknown:
        print(f"bench: unknown benchmark(s) {unknown}; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 1
    info = machine()
    report = Report()
    t0 = time.monotonic()
    for k in keys:
        print(f"== {k}", file=sys.stderr, flush=True)
        try:
            importlib.import_module(BENCHES[k]).run(report, quick=args.quick)
        except Exception as e:  # one benchmark's failure must not hide the others
            traceback.print_exc()
            report.add(k, "ERROR", f"{type(e).__name__}: {e}".splitlines()[0][:200])
    elapsed = time.monotonic() - t0
    info["loadavg at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info["bench wall time"] = f"{elapsed:.0f} s"
    cmd = ".venv/bin/python -m bench" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    text = render(info, report, cmd)
    print(text)
    if not args.no_write and not args.quick:
        name = "RESULTS.md" if keys == list(BENCHES) else f"RESULTS-{'-'.join(keys)}.md"  # a subset: its own file
        with open(os.path.join(ROOT, "bench", name), "w") as f:
            f.write(text)
    return 0


def render(info: dict[str, str], report: Report, cmd: str) -> str:
    head = "\n".join(f"- {k}: {v}" for k, v in info.items())
    notes = "\n".join(f"- {n}" for n in report.notes)
    how = ("Each figure is a median [min–max] over repeats; a ratio is taken per round against its reference "
           "measured back to back in the same run (the machine is shared: compare ratios, not absolute times).")
    return (f"# Benchmark results\n\nCommand: `{cmd}` (from the repository root, as root; or `bench/run`)\n\n"
            f"{head}\n\n{how}\n\n{table(report.rows)}\n\nNotes:\n{notes}\n")


if __name__ == "__main__":
    os.chdir(ROOT)
    raise SystemExit(main())
