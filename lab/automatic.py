"""Automatic failover on the two-VM lab: the cluster of `lab.cluster` with `failover.mode:
automatic`, synchronous replication and three etcd 3.4 members.

- an etcd member in each VM, on its management address, started by the boot hook before the
  agent (its data on the node's own disk, so that a power cut keeps it, as on a real node);
- the witness member on the host, on the lab's management address (`Layout.host_mgmt_ip`),
  its data in a directory the caller gives (a test's temporary directory): `close()` stops it;
- DRBD with `fencing resource-and-stonith` and `reconciler fence-peer` as the handler
  (`lab.provision.provision(lab, fencing=..., fence_peer=FENCE_PEER)`);
- Linux's softdog as the watchdog (loaded by the boot hook; the host kernel has none).

Timings are those of a slow machine: an observation costs 1-5 s of a VM's one emulated CPU, and
one action of a holder (a promotion, a service start) must never outlast `demote_after_s` (the
keeper renews only on the loop's heartbeat).  validate checks the relations:
renew 2 + etcd timeout 4 <= demote after 20; 20 + budget 20 <= watchdog 45; 45 + 2 <= TTL 50.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from lab.client import ExecResult
from lab.cluster import BOOT_PID, ETC, PY, SPEC, STATE_DIR, LabCluster, spec_text
from lab.lab import Lab
from lab.topology import NODES

ETCD, ETCDCTL = "/usr/bin/etcd", "/usr/bin/etcdctl"
ETCD_DATA = "/var/lib/rce2e/etcd"  # on the node's own disk (lab.topology.PERSISTED)
ETCD_LOG = "/var/lib/rce2e/etcd.log"
WITNESS = "wit"
PREFIX = "/reconciler/lab"
FENCE_PEER = f"{ETC}/fence-peer"  # per node: the handler names the node and the state directory
TIMINGS = {"lease_ttl_s": 50, "renew_interval_s": 2, "demote_after_s": 20, "demotion_budget_s": 20}
WATCHDOG_S = 45
REQUEST_TIMEOUT_S = 4
# Raft under software emulation: a 100 ms heartbeat is missed whenever a VM's one CPU is busy.
RAFT = ["--heartbeat-interval=500", "--election-timeout=5000"]


def members(lab: Lab) -> dict[str, str]:
    net = lab.lay.mgmt_net
    return {**{n.name: n.mgmt_ip(net) for n in NODES}, WITNESS: lab.lay.host_mgmt_ip}


def etcd_argv(lab: Lab, member: str, data_dir: str) -> list[str]:
    ms = members(lab)
    addr = ms[member]
    return [ETCD, "--name", member, "--data-dir", data_dir,
            "--listen-client-urls", f"http://{addr}:2379,http://127.0.0.1:2379",
            "--advertise-client-urls", f"http://{addr}:2379", "--listen-peer-urls", f"http://{addr}:2380",
            "--initial-advertise-peer-urls", f"http://{addr}:2380",
            "--initial-cluster", ",".join(f"{m}=http://{a}:2380" for m, a in ms.items()),
            "--initial-cluster-state", "new", "--initial-cluster-token", f"rc-{lab.lay.name}", "--pre-vote=true",
            *RAFT]  # fmt: skip


def auto_spec_text(lab: Lab, primary: str, fenced: tuple[str, ...] = (), revision: int = 0) -> str:
    text = spec_text(lab.lay.mgmt_net, primary, fenced)
    text = text.replace("  replication_user: replicator\n", "  replication_user: replicator\n  synchronous: true\n")
    endpoints = ", ".join(f"http://{a}:2379" for a in members(lab).values())
    t = TIMINGS
    return text + f"""failover:
  mode: automatic
  witness: {{name: {WITNESS}, address: {lab.lay.host_mgmt_ip}}}
  etcd: {{endpoints: [{endpoints}], prefix: {PREFIX}, request_timeout_s: {REQUEST_TIMEOUT_S}}}
  lease_ttl_s: {t['lease_ttl_s']}
  renew_interval_s: {t['renew_interval_s']}
  demote_after_s: {t['demote_after_s']}
  demotion_budget_s: {t['demotion_budget_s']}
  watchdog: {{device: /dev/watchdog, timeout_s: {WATCHDOG_S}}}
# revision {revision}
"""


class AutoLabCluster(LabCluster):
    def __init__(self, lab: Lab, witness_dir: Path) -> None:
        super().__init__(lab)
        self.witness_dir = witness_dir  # the witness member's data and log (outside the lab's state)
        self.revision = 0
        self.witness: subprocess.Popen[bytes] | None = None

    # ---- building ---------------------------------------------------------------------------
    def start_witness(self) -> None:
        """The host's etcd member, on the lab's management address (exists while the lab is up)."""
        self.witness_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = self.witness_dir / "data"
        log = open(self.witness_dir / "etcd.log", "ab")  # noqa: SIM115 - kept by the process
        try:
            self.witness = subprocess.Popen(etcd_argv(self.lab, WITNESS, str(data)), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()

    def close(self) -> None:
        """Stop the witness member (the VMs' members go with `lab down`)."""
        p, self.witness = self.witness, None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(15)

    def fence_peer_script(self, node: str) -> str:
        return (f"#!/bin/sh\n# DRBD's fence-peer handler on {node} (lab.automatic)\n"
                f"exec {PY} -m reconciler fence-peer {SPEC} --node {node} "
                f"--state-dir {STATE_DIR}\n")

    def build(self, primary: str = "mx1") -> None:
        super().build(primary)
        for n in NODES:
            self.put(n.name, FENCE_PEER, self.fence_peer_script(n.name), "0700")

    def set_spec(self, primary: str, fenced: tuple[str, ...] = (), nodes: tuple[str, ...] = ("mx1", "mx2")) -> None:
        """A new revision of the spec on `nodes` (each call is one, as a git commit would be)."""
        self.revision += 1
        text = auto_spec_text(self.lab, primary, fenced, self.revision)
        for n in nodes:
            self.put(n, SPEC, text)

    def boot_hook(self, node: str) -> str:
        """The plain cluster's boot hook, with softdog loaded and the node's etcd member
        started (in the background, restarted if it exits) before the agent."""
        argv = " ".join(etcd_argv(self.lab, node, ETCD_DATA))
        pre = (f"modprobe softdog\n"
               f"( while :; do {argv} >>{ETCD_LOG} 2>&1 </dev/null; sleep 2; done ) &\n")
        hook = super().boot_hook(node)
        return hook.replace(f"echo $$ > {BOOT_PID}\n", f"echo $$ > {BOOT_PID}\n{pre}", 1)

    # ---- reading ----------------------------------------------------------------------------
    def status(self, node: str) -> dict[str, Any]:
        r = self.cli(node, "status", SPEC, "--node", node, "--json", "--state-dir", STATE_DIR).check()
        return dict(json.loads(r.stdout))

    def plan(self, node: str) -> ExecResult:
        return self.cli(node, "plan", SPEC, "--node", node, "--state-dir", STATE_DIR)

    def keys(self) -> dict[str, dict[str, object] | int | str]:
        """The leadership keys, read from the host through the witness member (linearizable)."""
        ep = f"http://{self.lab.lay.host_mgmt_ip}:2379"
        r = subprocess.run([ETCDCTL, f"--endpoints={ep}", "--command-timeout=5s", "get", "--prefix", f"{PREFIX}/",
                            "-w", "json"], capture_output=True, text=True, timeout=15,
                           env={**os.environ, "ETCDCTL_API": "3"})
        if r.returncode != 0:
            raise RuntimeError(f"etcdctl get: {r.stderr.strip()[-300:]}")
        out: dict[str, dict[str, object] | int | str] = {}
        for kv in json.loads(r.stdout).get("kvs", []):
            k = base64.b64decode(kv["key"]).decode()[len(PREFIX) + 1:]
            v = base64.b64decode(kv["value"]).decode()
            try:
                out[k] = json.loads(v)
            except ValueError:
                out[k] = v
        return out

    def holder(self) -> str | None:
        try:
            leader = self.keys().get("leader")
        except (RuntimeError, subprocess.TimeoutExpired):
            return None
        if isinstance(leader, dict):
            return str(leader.get("node"))
        return None

    def wait_holder(self, node: str, timeout: float) -> float:
        t0 = time.monotonic()
        while self.holder() != node:
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"{node} does not hold the leader key after {timeout:.0f} s: {self.keys()}")
            time.sleep(1.0)
        return time.monotonic() - t0
