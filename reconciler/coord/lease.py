"""The lease keeper: keeps this node's etcd lease alive, in its own process, and says until when
this node may still act as the holder.

Why a process of its own: the agent's loop runs long actions (a pg_basebackup can take an hour)
and must not lose the lease meanwhile; and a hung agent or a hung PostgreSQL must lose it.  So the
keeper renews only while the agent's heartbeat is fresh: the agent writes the heartbeat (a
CLOCK_BOOTTIME reading) after each loop step that observed its node, PostgreSQL included; a step
that hangs stops the heartbeat, and the lease then runs out on the server.

The one number the rest of the agent uses is the **local deadline**: the *send* time of the last
keepalive that etcd answered with a TTL, plus that TTL.  etcd restarts the TTL when it handles the
keepalive, which is after it was sent, so the server's expiry can only be later than the local
deadline (an isolated etcd leader was measured answering keepalives for ~1.7 s after it lost its
quorum: counting from the reply would not be safe).  All times are CLOCK_BOOTTIME: a step of the
wall clock changes nothing, and a suspended machine's deadline passes while it sleeps.

The keeper never revokes a lease because the agent went quiet: revoking would let the peer
promote while this node's PostgreSQL may still be writable.  It only stops renewing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from reconciler import safefile
from reconciler.coord.etcd import EtcdClient, EtcdError

STATE_FORMAT = 1


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class LeaseState:
    """What the keeper knows, as written to its state file (all times CLOCK_BOOTTIME seconds)."""

    lease: int | None = None  # etcd lease ID; None: no lease (not yet granted, expired or revoked)
    ttl: int = 0
    last_ok_sent: float | None = None  # send time of the last grant/keepalive etcd answered with a TTL
    renewals: int = 0
    failures: int = 0  # consecutive failed renewals
    last_error: str = ""
    paused_for: str = ""  # why the keeper is not renewing (stale heartbeat), "" while it renews
    written_at: float = 0.0
    boot_id: str = ""  # CLOCK_BOOTTIME readings mean something only within the boot that took them

    @property
    def deadline(self) -> float | None:
        """Until when this node may act as the holder; None without a lease."""
        if self.lease is None or self.last_ok_sent is None:
            return None
        return self.last_ok_sent + self.ttl

    def to_json(self) -> str:
        return json.dumps({"format": STATE_FORMAT, **asdict(self), "deadline": self.deadline}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LeaseState:
        doc = json.loads(text)
        if doc.get("format") != STATE_FORMAT:
            raise ValueError(f"lease state format {doc.get('format')!r}, expected {STATE_FORMAT}")
        fields = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
        return cls(**fields)


class Keeper:
    """One lease, renewed by `step`.  `clock` is CLOCK_BOOTTIME (injected for tests)."""

    def __init__(self, client: EtcdClient, ttl: int, *, clock: Callable[[], float] = boottime) -> None:
        self.client = client
        self.ttl = ttl
        self.clock = clock
        self.state = LeaseState(ttl=ttl)

    def grant(self) -> None:
        sent = self.clock()
        try:
            lease, ttl = self.client.grant(self.ttl)
        except EtcdError as e:
            self._failed(str(e))
            return
        self.state = LeaseState(lease=lease, ttl=ttl, last_ok_sent=sent, renewals=0)

    def renew(self) -> None:
        """One keepalive.  Success moves the local deadline to send time + TTL; a lease that etcd
        no longer has is forgotten (the caller grants a new one when it wants to hold again)."""
        if self.state.lease is None:
            return
        sent = self.clock()
        try:
            ttl = self.client.keepalive(self.state.lease)
        except EtcdError as e:
            self._failed(str(e))
            return
        if ttl is None:
            self.state = LeaseState(ttl=self.ttl, last_error=f"lease {self.state.lease:x} expired or was revoked")
            return
        self.state.last_ok_sent = sent
        self.state.ttl = ttl
        self.state.renewals += 1
        self.state.failures = 0
        self.state.last_error = ""

    def _failed(self, error: str) -> None:
        self.state.failures += 1
        self.state.last_error = error[:300]


def heartbeat_age(path: str, now: float) -> float | None:
    """Seconds since the agent's last heartbeat (a CLOCK_BOOTTIME reading in `path`), None if
    there is none or it cannot be read."""
    try:
        with open(path, encoding="ascii") as f:
            return now - float(f.read(64).strip())
    except (OSError, ValueError):
        return None


def write_heartbeat(path: str, now: float | None = None) -> None:
    """The agent's side: 'my last step observed this node' (atomic: a reader never sees half)."""
    safefile.write_file(path, f"{boottime() if now is None else now:.6f}\n".encode())


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read(64).strip()
    except OSError:
        return ""


def write_state(path: str, state: LeaseState) -> None:
    state.boot_id = state.boot_id or boot_id()
    safefile.write_file(path, (state.to_json() + "\n").encode())


def adopted(path: str, lease: int, ttl: int, now: float) -> LeaseState:
    """The state to start from when adopting `lease` (an agent restarted while holding): the previous
    keeper's, if it was renewing that lease in this boot (so that the local deadline carries over:
    a first keepalive that fails does not read as "never renewed"); else the lease, not yet renewed."""
    prev = read_state(path)
    if (prev is not None and prev.lease == lease and prev.last_ok_sent is not None and prev.boot_id
            and prev.boot_id == boot_id() and prev.last_ok_sent <= now):
        prev.paused_for, prev.failures = "", 0
        return prev
    return LeaseState(lease=lease, ttl=ttl)


def read_state(path: str) -> LeaseState | None:
    try:
        with open(path, encoding="utf-8") as f:
            return LeaseState.from_json(f.read(65536))
    except (OSError, ValueError):
        return None


def run(keeper: Keeper, interval: float, heartbeat: str, max_heartbeat_age: float, state_path: str,
        should_stop: Callable[[], bool] = lambda: False) -> None:
    """The keeper's loop: grant once (unless it adopted a lease), then renew every `interval` while
    the agent's heartbeat is younger than `max_heartbeat_age`; write the state after every step."""
    if keeper.state.lease is None:
        keeper.grant()
    while not should_stop():
        started = keeper.clock()
        age = heartbeat_age(heartbeat, started)
        if age is None or age > max_heartbeat_age:
            keeper.state.paused_for = ("no heartbeat from the agent" if age is None
                                       else f"the agent's last heartbeat is {age:.1f} s old")
        else:
            keeper.state.paused_for = ""
            if keeper.state.lease is None:
                keeper.grant()
            else:
                keeper.renew()
        keeper.state.written_at = keeper.clock()
        write_state(state_path, keeper.state)
        time.sleep(max(0.0, interval - (keeper.clock() - started)))


def main(argv: list[str] | None = None) -> int:
    """`python -m reconciler.coord.lease`: the keeper process the agent starts (and tests run).
    SIGTERM ends it without revoking: the lease runs out on the server by itself."""
    import argparse
    import signal

    p = argparse.ArgumentParser(prog="reconciler-lease-keeper")
    p.add_argument("--endpoint", action="append", required=True, help="etcd client URL (repeat)")
    p.add_argument("--ttl", type=int, required=True)
    p.add_argument("--interval", type=float, required=True, help="seconds between renewals")
    p.add_argument("--timeout", type=float, default=2.0, help="etcd request timeout")
    p.add_argument("--heartbeat", required=True, help="the agent's heartbeat file")
    p.add_argument("--max-heartbeat-age", type=float, required=True)
    p.add_argument("--state", required=True, help="where to write the lease state")
    p.add_argument("--adopt", type=int, help="renew this lease (an agent restarted while holding) "
                   "instead of granting one first; a lease etcd no longer has is replaced")
    for opt in ("--ca-file", "--cert-file", "--key-file", "--username", "--password-file"):
        p.add_argument(opt)
    a = p.parse_args(argv)
    stop = {"now": False}
    parent = os.getppid()

    def _term(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _term)
    _exit_with_parent()
    from reconciler.coord.connect import CoordConfigError, client

    try:
        etcd = client(a.endpoint, a.timeout, ca_file=a.ca_file, cert_file=a.cert_file, key_file=a.key_file,
                      username=a.username, password_file=a.password_file)
    except CoordConfigError as e:
        print(f"reconciler-lease-keeper: {e}", file=sys.stderr)
        return 1
    keeper = Keeper(etcd, a.ttl)
    if a.adopt:
        keeper.state = adopted(a.state, a.adopt, a.ttl, keeper.clock())
    try:
        run(keeper, a.interval, a.heartbeat, a.max_heartbeat_age, a.state,
            lambda: stop["now"] or os.getppid() != parent)
    except KeyboardInterrupt:
        pass
    return 0


def _exit_with_parent() -> None:
    """SIGTERM when the agent that started this keeper ends (Linux prctl PR_SET_PDEATHSIG); the
    loop also checks its parent.  The lease is never revoked: it runs out on the server."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
