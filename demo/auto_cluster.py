"""The two-node cluster of `demo.cluster` with automatic failover: a witness namespace and three
real etcd 3.4 members (one in each node's namespace, one on the witness), the spec's
`failover: automatic` section with short timings, synchronous replication.

    sw (br0) ── mx1 10.77.0.1   agent, PostgreSQL, etcd member mx1
             ── mx2 10.77.0.2   agent, PostgreSQL, etcd member mx2
             ── wit 10.77.0.3   etcd member wit (the witness)
             ── cl  10.77.0.100 the client

`cut(a, b)` drops the traffic between two machines (a blackhole route on each side, so etcd,
PostgreSQL and the peer channel all see it); `heal(a, b)` undoes it.  `close()` also stops the
etcd members started here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

from demo.cluster import NODES, TwoNode, in_ns, sh, wait_for

WITNESS = ("wit", "10.77.0.3")
ADDR = {**NODES, WITNESS[0]: WITNESS[1]}
ETCD = "/usr/bin/etcd"
# Short timings (validate accepts them: renew 1 + timeout 1 <= demote 5; 5 + budget 3 + 2 <= TTL 10).  demote_after_s
# outlasts an etcd leader election (a member stopped: ~1-3 s without a leader, measured here).
TIMINGS = {"lease_ttl_s": 10, "renew_interval_s": 1, "demote_after_s": 5, "demotion_budget_s": 3}


# The failover hook of the demo spec: one JSON line of the RECONCILER_* facts per run.
HOOK = """import json, os, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({k: v for k, v in os.environ.items() if k.startswith("RECONCILER_")}) + "\\n")
"""


def hook_runs(c: AutoTwoNode, node: str) -> list[dict[str, str]]:
    import json

    path = os.path.join(c.root, node, "hooks.log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class AutoTwoNode(TwoNode):
    def __init__(self, n_ips: int = 4, ttl: int = 10) -> None:
        super().__init__(n_ips=n_ips)
        self.ns["wit"] = f"{self.prefix}-wit"
        self.timings = dict(TIMINGS, lease_ttl_s=ttl)
        self.etcd: dict[str, subprocess.Popen[bytes]] = {}
        self.cuts: set[tuple[str, str]] = set()
        self.edits = 0  # each set_primary is a new revision, as a git commit would be

    # ---- building ---------------------------------------------------------------------------
    def build(self, primary: str = "mx1") -> None:
        super().build(primary)
        with open(os.path.join(self.root, "bin", "hook.py"), "w") as f:
            f.write(HOOK)
        a, b = f"{self.prefix}aw"[:15], f"{self.prefix}bw"[:15]
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", self.ns["wit"], "name", "eth0")
        sh("ip", "link", "set", b, "netns", self.ns["sw"])
        in_ns(self.ns["sw"], "ip", "link", "set", b, "master", "br0", "up")
        in_ns(self.ns["wit"], "ip", "addr", "add", f"{WITNESS[1]}/16", "dev", "eth0")
        in_ns(self.ns["wit"], "ip", "link", "set", "eth0", "up")
        for m in ADDR:
            self.start_etcd(m, "new")

    def start_etcd(self, member: str, state: str = "existing") -> None:
        addr = ADDR[member]
        data = os.path.join(self.root, f"etcd-{member}")
        cluster = ",".join(f"{m}=http://{a}:2380" for m, a in ADDR.items())
        argv = ["ip", "netns", "exec", self.ns[member], ETCD, "--name", member, "--data-dir", data,
                "--listen-client-urls", f"http://{addr}:2379,http://127.0.0.1:2379",
                "--advertise-client-urls", f"http://{addr}:2379", "--listen-peer-urls", f"http://{addr}:2380",
                "--initial-advertise-peer-urls", f"http://{addr}:2380", "--initial-cluster", cluster,
                "--initial-cluster-state", state, "--initial-cluster-token", f"rc-{self.prefix}", "--pre-vote=true",
                "--log-outputs", "stderr"]
        with open(os.path.join(self.root, f"etcd-{member}.log"), "ab") as log:
            self.etcd[member] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                                 start_new_session=True)

    def stop_etcd(self, member: str) -> None:
        p = self.etcd.pop(member, None)
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(20)

    def spec_text(self, primary: str, fenced: tuple[str, ...] = (), drift_s: float = 1.0) -> str:
        text = super().spec_text(primary, fenced, drift_s)
        text = text.replace("  replication_user: replicator\n", "  replication_user: replicator\n  synchronous: true\n")
        t = self.timings
        hook = f"hooks:\n  failover: [[{self.root}/bin/python, {self.root}/bin/hook.py, {self.root}/{{node}}/hooks.log]]\n"
        return text + hook + f"# edit {self.edits}\n" + (f"failover:\n  mode: automatic\n  witness: {{name: {WITNESS[0]}, address: {WITNESS[1]}}}\n"
                       f"  etcd: {{request_timeout_s: 1}}\n  watchdog: 'off'\n"
                       + "".join(f"  {k}: {v}\n" for k, v in t.items()))

    def set_primary(self, primary: str, fenced: tuple[str, ...] = ()) -> None:
        self.edits += 1
        super().set_primary(primary, fenced)

    def start_agent(self, node: str) -> None:
        log = open(os.path.join(self.root, node, "agent.log"), "a")
        from demo.cluster import PY, ROOT_DIR

        self.agents[node] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[node], PY, "-m", "reconciler", "run", self.spec_path(node), "--node", node,
             "--state-dir", self.state_dir(node)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT_DIR, start_new_session=True)

    def state_dir(self, node: str) -> str:
        return os.path.join(self.root, node, "state")

    def plan(self, node: str) -> subprocess.CompletedProcess:
        from demo.cluster import PY

        return in_ns(self.ns[node], PY, "-m", "reconciler", "plan", self.spec_path(node), "--node", node,
                     "--state-dir", self.state_dir(node), timeout=60, check=False)

    def status_json(self, node: str) -> dict:
        import json

        from demo.cluster import PY

        r = in_ns(self.ns[node], PY, "-m", "reconciler", "status", self.spec_path(node), "--node", node, "--json",
                  "--state-dir", self.state_dir(node), timeout=60)
        return json.loads(r.stdout)

    def status_text(self, node: str) -> str:
        from demo.cluster import PY

        return in_ns(self.ns[node], PY, "-m", "reconciler", "status", self.spec_path(node), "--node", node,
                     "--state-dir", self.state_dir(node), timeout=60).stdout

    # ---- faults -----------------------------------------------------------------------------
    def cut(self, a: str, b: str) -> None:
        in_ns(self.ns[a], "ip", "route", "add", "blackhole", f"{ADDR[b]}/32")
        in_ns(self.ns[b], "ip", "route", "add", "blackhole", f"{ADDR[a]}/32")
        self.cuts.add((a, b))

    def heal(self, a: str, b: str) -> None:
        in_ns(self.ns[a], "ip", "route", "del", "blackhole", f"{ADDR[b]}/32", check=False)
        in_ns(self.ns[b], "ip", "route", "del", "blackhole", f"{ADDR[a]}/32", check=False)
        self.cuts.discard((a, b))

    def keys(self) -> dict[str, dict | int]:
        """The leadership keys as etcd shows them (read from the client's namespace, which no cut
        separates from any member)."""
        import json

        for addr in ADDR.values():  # one member at a time: one cut off from the raft leader answers nothing
            r = in_ns(self.ns["cl"], "etcdctl", f"--endpoints=http://{addr}:2379", "--command-timeout=2s", "get",
                      "--prefix", "/reconciler/lab/", check=False, timeout=10)
            if r.returncode == 0:
                break
        else:
            raise RuntimeError(f"no etcd member answered: {r.stderr.strip()[-300:]}")
        lines = r.stdout.splitlines()
        kv = dict(zip(lines[::2], lines[1::2]))
        out: dict[str, dict | int] = {k.rsplit("/", 1)[1]: json.loads(v) for k, v in kv.items() if not k.endswith("/epoch")}
        out["epoch"] = int(kv.get("/reconciler/lab/epoch", "0"))
        return out

    def leader(self) -> tuple[str | None, int]:
        """(holder, epoch) as etcd shows them."""
        k = self.keys()
        lead = k.get("leader")
        return (lead["node"] if isinstance(lead, dict) else None), int(k["epoch"])  # type: ignore[call-overload]

    def steady(self, holder: str) -> bool:
        """`holder` holds the key and has published the other node as its synchronous candidate."""
        k = self.keys()
        lead, cand = k.get("leader"), k.get("candidate")
        other = next(n for n in NODES if n != holder)
        return (isinstance(lead, dict) and lead["node"] == holder and isinstance(cand, dict)
                and cand["node"] == other and cand["epoch"] == k["epoch"])

    def wait_holder(self, node: str, timeout: float = 60) -> None:
        wait_for(lambda: self.leader()[0] == node, timeout, f"{node} holding the leader key", every=0.2)

    def close(self) -> None:
        for pair in list(self.cuts):
            with contextlib.suppress(Exception):
                self.heal(*pair)
        for m in list(self.etcd):
            with contextlib.suppress(Exception):
                self.stop_etcd(m)
        super().close()
