"""Real clients and a real MTA for the two-VM lab: Postfix from Debian as the Primary's
service, swaks sending a numbered stream of messages, pgbench inserting numbered rows.

Postfix is installed on the host unconfigured (scripts/setup: "No configuration", nothing
listens on the host); the VMs see the host's root, so each node writes its own
/etc/postfix/main.cf (kept on its persistent disk) and runs it only when its agent starts it.
The queue and the maildir are on the DRBD mount: what Postfix answered 250 for (it fsyncs
the queue file first) moves with the Primary.

Clients run on the host and talk to the floating address:
  Sender   one swaks process per message (`X-Seq: N`), paced; each exit status kept
           (0: the server answered 250 after DATA);
  Bench    pgbench in a loop (a run ends when its connections are cut; the next starts at
           once), 2 clients each inserting rows tagged (run, client); per-transaction logs
           (-l) give every acknowledged transaction and the transactions per second.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from lab.cluster import MOUNT, PG_BIN, LabCluster

QUEUE = f"{MOUNT}/postfix/queue"
DATA = f"{MOUNT}/postfix/data"
MAILDIR = f"{MOUNT}/mail/inbox"
MAILLOG = "/var/log/postfix-lab.log"
DOMAIN = "lab.example"
SWAKS = "/usr/bin/swaks"
PGBENCH = f"{PG_BIN}/pgbench"
NOBODY = 65534  # the virtual mailboxes' owner (virtual(8) refuses uids below 100)
RUN_S = 15  # one pgbench run

MAIN_CF = """\
# /etc/postfix/main.cf of a lab node (lab.mta): the same on both nodes but for myhostname.
compatibility_level = 3.6
myhostname = {node}.{domain}
mydomain = {domain}
myorigin = $mydomain
mydestination =
inet_interfaces = all
inet_protocols = ipv4
mynetworks = 127.0.0.0/8 {mgmt}.0/24
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# on the DRBD mount: moves with the Primary
queue_directory = {queue}
data_directory = {data}
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {mount}/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:{nobody}
virtual_gid_maps = static:{nobody}
alias_maps =
alias_database =
local_recipient_maps =
smtpd_banner = $myhostname ESMTP
# the VMs have no resolver: no reverse lookup of each client
smtpd_peername_lookup = no
biff = no
smtputf8_enable = no
# no syslog daemon in the VMs
maillog_file = {maillog}
"""

BENCH_SQL = "INSERT INTO bench_rows (run, client) VALUES (:run, :client_id);\n"
BENCH_SETUP = [
    "CREATE TABLE IF NOT EXISTS bench_rows (n bigserial PRIMARY KEY, run int NOT NULL, client int NOT NULL)",
    "GRANT INSERT, SELECT ON bench_rows TO app",
    "GRANT USAGE ON SEQUENCE bench_rows_n_seq TO app",
]


def configure(c: LabCluster) -> None:
    """main.cf on both nodes (chroot off: the queue directory is not a prepared chroot)."""
    for n in ("mx1", "mx2"):
        text = MAIN_CF.format(node=n, domain=DOMAIN, mgmt=c.lab.lay.mgmt_net, queue=QUEUE, data=DATA,
                              mount=MOUNT, nobody=NOBODY, maillog=MAILLOG)
        c.put(n, "/etc/postfix/main.cf", text)
        c.sh(n, "postconf -F '*/*/chroot = n' && postconf -n >/dev/null")


def prepare(c: LabCluster, node: str = "mx1") -> None:
    """Once, on the freshly provisioned r0 (as an operator would after mkfs): the queue,
    data and mail directories Postfix expects on the DRBD filesystem (`postfix start`
    creates what is below them, not them)."""
    from lab.provision import DEVICE, RESOURCE

    c.sh(node, f"drbdadm primary {RESOURCE} && mkdir -p {MOUNT} && mount {DEVICE} {MOUNT} && "
               f"mkdir -p {QUEUE} {DATA} {MOUNT}/mail && chown {NOBODY}:{NOBODY} {MOUNT}/mail && chown postfix {DATA} && "
               f"umount {MOUNT} && drbdadm secondary {RESOURCE}", 120)


def delivered(c: LabCluster, node: str) -> Counter[int]:
    """X-Seq -> number of copies in the maildir on `node` (the Primary, with r0 mounted)."""
    r = c.sh(node, f"cat {MAILDIR}/new/* {MAILDIR}/cur/* 2>/dev/null | grep -a '^X-Seq: ' || true", 120)
    return Counter(int(m) for m in re.findall(r"^X-Seq: (\d+)", r.stdout, re.M))


def queue_empty(c: LabCluster, node: str) -> bool:
    r = c.sh(node, "postqueue -p 2>&1 || true", 60)
    return "Mail queue is empty" in r.stdout


class Sender:
    """swaks on the host: message N (`X-Seq: N`) to the floating address, one after the
    other, `pace_s` apart; (N, time the process ended, exit status) for each."""

    def __init__(self, host: str, pace_s: float = 0.2) -> None:
        self.host, self.pace_s = host, pace_s
        self.sent: list[tuple[int, float, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="swaks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            argv = [SWAKS, "--server", self.host, "--port", "25", "--from", "sender@client.example",
                    "--to", f"n{n}@{DOMAIN}", "--header", f"X-Seq: {n}", "--body", f"message {n}",
                    "--timeout", "10", "--silent", "2"]
            try:
                rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, timeout=60).returncode
            except subprocess.TimeoutExpired:
                rc = -1
            with self._lock:
                self.sent.append((n, time.monotonic(), rc))
            self._stop.wait(self.pace_s)

    def accepted(self) -> list[tuple[int, float]]:
        with self._lock:
            return [(n, t) for n, t, rc in self.sent if rc == 0]

    def refused(self) -> list[tuple[int, float]]:
        with self._lock:
            return [(n, t) for n, t, rc in self.sent if rc != 0]

    def wait_accepted(self, k: int, timeout: float = 180.0) -> None:
        base, t0 = len(self.accepted()), time.monotonic()
        while len(self.accepted()) < base + k:
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"swaks: fewer than {k} messages accepted in {timeout:.0f} s; "
                                     f"last exit statuses {[rc for _, _, rc in self.sent[-5:]]}")
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(90)

    def outage(self, since: float) -> tuple[float, int]:
        """(first refused -> next accepted, in seconds; refused messages) after `since`."""
        with self._lock:
            rows = [(t, rc) for _, t, rc in self.sent if t >= since]
        first_bad = next((t for t, rc in rows if rc != 0), None)
        if first_bad is None:
            return 0.0, 0
        next_ok = next((t for t, rc in rows if rc == 0 and t > first_bad), first_bad)
        return next_ok - first_bad, sum(1 for _, rc in rows if rc != 0)


class Bench:
    """pgbench runs back to back against the floating address until stopped."""

    def __init__(self, host: str, clients: int = 2, rate: int = 40) -> None:
        self.host, self.clients, self.rate = host, clients, rate
        self.dir = Path(tempfile.mkdtemp(prefix="pgbench-"))
        (self.dir / "insert.sql").write_text(BENCH_SQL)
        self.runs = 0
        self.failed_runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgbench", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Short runs (RUN_S), each ending by itself: pgbench writes its per-transaction log
        # through stdio and a signal would lose the tail; `stop` waits for the current one.
        while not self._stop.is_set():
            self.runs += 1
            argv = [PGBENCH, "-n", "-h", self.host, "-p", "5432", "-U", "app", "-d", "postgres",
                    "-f", str(self.dir / "insert.sql"), "-c", str(self.clients), "-R", str(self.rate),
                    "-T", str(RUN_S), "-D", f"run={self.runs}", "-l", "--log-prefix", str(self.dir / f"run{self.runs}")]
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd=self.dir, timeout=RUN_S + 120).returncode
            if rc != 0:  # its connections were cut, or it could not connect
                self.failed_runs += 1
                self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(RUN_S + 150)

    def tps(self, t0: float, t1: float) -> list[int]:
        """Acknowledged transactions in each second from t0 to t1 (epoch seconds)."""
        buckets = [0] * max(1, int(t1 - t0))
        for ends in self.acknowledged().values():
            for t in ends:
                if t0 <= t < t0 + len(buckets):
                    buckets[int(t - t0)] += 1
        return buckets

    def acknowledged(self) -> dict[tuple[int, int], list[float]]:
        """(run, client) -> end times (epoch seconds) of its acknowledged transactions,
        from pgbench's per-transaction logs (failed or skipped ones are not counted)."""
        out: dict[tuple[int, int], list[float]] = {}
        for f in sorted(self.dir.glob("run*")):
            m = re.fullmatch(r"run(\d+)\.\d+(?:\.\d+)?", f.name)
            if not m:
                continue
            run = int(m[1])
            for line in f.read_text().splitlines():
                w = line.split()
                if len(w) >= 6 and w[2].isdigit():
                    out.setdefault((run, int(w[0])), []).append(int(w[4]) + int(w[5]) / 1e6)
        return out

    def cleanup(self) -> None:
        for f in self.dir.iterdir():
            f.unlink()
        self.dir.rmdir()
