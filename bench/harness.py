"""The shared bench harness: timing, medians, result rows, throwaway namespaces, machine info.

Every figure a benchmark reports is either a ratio against a reference measured in the
same run (interleaved with it, so a noisy neighbour hits both alike) or a median with its
min and max over repeats.  Nothing here asserts a time: benchmarks report, they never fail
on a number.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


# ---- numbers ------------------------------------------------------------------------------
@dataclass
class Stat:
    """Median with min and max of repeated samples (seconds, bytes, ... as given)."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def lo(self) -> float:
        return min(self.samples)

    @property
    def hi(self) -> float:
        return max(self.samples)

    def fmt(self, unit: str = "s", scale: float = 1.0, digits: int = 3) -> str:
        f = lambda v: f"{v * scale:.{digits}f}"  # noqa: E731
        return f"{f(self.median)} {unit} [{f(self.lo)}–{f(self.hi)}]".strip()


def ratio_stat(num: list[float], den: list[float]) -> Stat:
    """Per-repeat ratios (num[i] / den[i]): each pair was measured back to back."""
    return Stat([a / b for a, b in zip(num, den)])


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleave(n: int, fns: dict[str, Callable[[], float]], setup: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Run each fn (returning its own measured seconds) once per round, `n` rounds, in a
    rotating order so that no method always runs first (or last) in a round."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(n):
        order = names[r % len(names):] + names[: r % len(names)]
        for k in order:
            if setup is not None:
                setup()
            out[k].append(fns[k]())
    return out


# ---- result rows -----------------------------------------------------------------------------
@dataclass
class Row:
    bench: str
    case: str
    value: str
    reference: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None  # None: no target, or not applicable

    @property
    def verdict(self) -> str:
        return "" if self.met is None else ("met" if self.met else "MISSED")


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *a: object, **kw: object) -> Row:
        r = Row(*a, **kw)  # type: ignore[arg-type]
        self.rows.append(r)
        print(f"  {r.bench} | {r.case} | {r.value} | {r.reference} | {r.ratio} | {r.target} {r.verdict}",
              file=sys.stderr, flush=True)
        return r

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", file=sys.stderr, flush=True)


def table(rows: list[Row]) -> str:
    head = ("benchmark", "case", "measured (median [min–max])", "reference, same run", "ratio", "target", "")
    body = [(r.bench, r.case, r.value, r.reference, r.ratio, r.target, r.verdict) for r in rows]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(out)


# ---- machine --------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    def cmd(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return "?"

    pg = cmd("/usr/lib/postgresql/15/bin/postgres", "--version")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": pg.replace("postgres (PostgreSQL) ", ""),
        "iproute2": cmd("ip", "-V").split(",")[1].strip() if "," in cmd("ip", "-V") else "?",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg at start": load,
    }


# ---- processes and namespaces -----------------------------------------------------------------
def sh(*argv: str, timeout: float = 60, check: bool = True, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=check, **kw)  # type: ignore[call-overload]


@contextlib.contextmanager
def netns_with_iface(iface: str = "eth0") -> Iterator[str]:
    """A fresh network namespace holding one up interface `iface`: one end of a veth pair
    whose other end (`{iface}p`) is up in the same namespace, so `iface` has carrier (this
    kernel has no dummy driver).  Deleted on exit, even on failure."""
    ns = f"rcb-{uuid.uuid4().hex[:10]}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "add", iface, "type", "veth", "peer", "name", f"{iface}p")
        sh("ip", "-n", ns, "link", "set", f"{iface}p", "up")
        sh("ip", "-n", ns, "link", "set", iface, "up")
        yield ns
    finally:
        sh("ip", "netns", "del", ns, check=False)


def kill_group(p: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 20) -> None:
    """Stop a child started with start_new_session=True, and its group (by its pid only)."""
    if p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, sig)
    try:
        p.wait(wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def proc_cpu_s(pid: int) -> float:
    """utime + stime of `pid` (seconds) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def python_child_of(pid: int, timeout: float = 10) -> int:
    """The pid running Python under `ip netns exec` (ip execs it: the same pid, once exec'd)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if "python" in os.readlink(f"/proc/{pid}/exe"):
                return pid
        time.sleep(0.01)
    return pid


def have(prog: str) -> bool:
    return shutil.which(prog) is not None


def need_root() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not have("ip"):
        return "needs iproute2"
    return None


# ---- a single-node agent in its own namespace (edit latency, footprint) -------------------------
def ipv4_range(first: str, n: int, prefix: int) -> list[str]:
    """n consecutive IPv4 host addresses from `first`, as 'a.b.c.d/prefix'."""
    import ipaddress

    base = int(ipaddress.IPv4Address(first))
    return [f"{ipaddress.IPv4Address(i)}/{prefix}" for i in range(base, base + n)]


def solo_spec(n_ips: int, *, extra: tuple[str, ...] = (), drift_s: float = 5.0, secret_file: str | None = None,
              announce_count: int = 0, first: str = "10.200.0.1", prefix: int = 32, primary: str = "mx1") -> str:
    """A spec with one node (mx1, 10.9.0.1) and only floating addresses: no peer to ask,
    no PostgreSQL, no DRBD: the address path alone."""
    addrs = ipv4_range(first, n_ips, prefix) if n_ips else []
    entries = []
    if addrs:
        last = addrs[-1].split("/")[0]
        entries.append(f"    - {first}-{last}/{prefix}" if n_ips > 1 else f"    - {addrs[0]}")
    entries += [f"    - {e}" for e in extra]
    agent = f"  drift_check_interval_s: {drift_s}\n"
    if secret_file:
        agent += f"  peer_secret_file: {secret_file}\n"
    return f"""cluster: bench
nodes:
  mx1: {{address: 10.9.0.1}}
primary: {primary}
floating_ips:
  interface: eth0
  addresses:
{chr(10).join(entries) if entries else '    []'}
announce: {{count: {announce_count}}}
agent:
{agent}"""


def write_atomic(path: str, text: str) -> float:
    """Write like an editor or git does (temp file, then rename); return time.time() taken
    just before the rename (the new file cannot be visible earlier; taken after it, a
    preemption of this process could make the agent look faster than it is)."""
    tmp = path + ".tmp~"  # watchfiles' default filter ignores names ending in '~'
    with open(tmp, "w") as f:
        f.write(text)
    t = time.time()
    os.replace(tmp, path)
    return t


class SoloAgent:
    """`reconciler run` (JSON logs) for a one-node spec, in a fresh namespace whose eth0
    holds the node address.  `close()` stops it (its process group, by pid), deletes the
    namespace and the temp dir, even after a failure."""

    def __init__(self, spec_text: str) -> None:
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="rcbench-")
        self.spec = os.path.join(self.dir, "cluster.yaml")
        self.secret = os.path.join(self.dir, "peer.secret")
        self.log = os.path.join(self.dir, "agent.log")
        self.proc: subprocess.Popen | None = None
        self._ns_cm = netns_with_iface()
        self.ns = self._ns_cm.__enter__()
        fd = os.open(self.secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(uuid.uuid4().hex * 2 + "\n")
        sh("ip", "-n", self.ns, "addr", "add", "10.9.0.1/24", "dev", "eth0")
        write_atomic(self.spec, spec_text)

    def start(self) -> None:
        logf = open(self.log, "a")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, PY, "-m", "reconciler", "run", self.spec, "--node", "mx1",
             "--log-format", "json"],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
        logf.close()

    def lines(self) -> list[dict]:
        import json

        out = []
        with open(self.log) as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def wait_log(self, pred: Callable[[dict], bool], timeout: float, after: int = 0) -> tuple[int, dict]:
        """(index, line) of the first log line from index `after` on that satisfies `pred`."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            for i in range(after, len(lines)):
                if pred(lines[i]):
                    return i, lines[i]
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"agent exited ({self.proc.returncode}): {lines[-3:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching agent log line within {timeout} s; last: {lines[-3:]}")
            time.sleep(0.01)

    def close(self) -> None:
        try:
            if self.proc is not None:
                kill_group(self.proc)
        finally:
            self._ns_cm.__exit__(None, None, None)
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SoloAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- where the time goes ----------------------------------------------------------------------
_CATEGORIES = (  # (substring of "file:function", category); first match wins
    ("method 'send' of '_socket.socket'", "kernel: netlink send (the kernel applies the requests inside send)"),
    ("method 'recv", "kernel: netlink recv (dumps, acks)"),
    ("ipaddress.py", "Python ipaddress parsing"),
    ("pydantic", "pydantic model construction/validation"),
    ("reconciler/netlink.py", "netlink codec (pack/parse, pure Python)"),
    ("reconciler/observe", "observe drivers (building AddressObs etc.)"),
    ("reconciler/plan", "planner"),
    ("reconciler/execute", "execute drivers"),
    ("reconciler/spec", "spec load"),
    ("yaml", "spec load"),
    ("_struct", "netlink codec (pack/parse, pure Python)"),
    ("inet_ntop", "netlink codec (pack/parse, pure Python)"),
)


def profile_breakdown(fn: Callable[[], object]) -> tuple[float, list[tuple[str, float]]]:
    """Run `fn` under cProfile (in the calling thread) and sum its *own* time by category.
    Returns (profiled total, [(category, share 0..1)] largest first).  cProfile inflates
    pure-Python parts more than C and kernel parts: read the shares as approximate."""
    import cProfile
    import pstats

    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    st = pstats.Stats(pr)
    sums: dict[str, float] = {}
    total = 0.0
    for (file, _line, func), (_cc, _nc, tt, _ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        key = f"{file}:{func}"
        cat = next((c for s, c in _CATEGORIES if s in key), "other Python")
        sums[cat] = sums.get(cat, 0.0) + tt
        total += tt
    return total, sorted(((k, v / total) for k, v in sums.items()), key=lambda kv: -kv[1])


def fmt_breakdown(parts: list[tuple[str, float]], top: int = 5) -> str:
    return "; ".join(f"{k} {v:.0%}" for k, v in parts[:top] if v >= 0.01)
