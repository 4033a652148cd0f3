"""Bring the two-VM lab up and down; cut and restore a node's replication link.

`up` builds, recording each piece in STATE/lab.json as soon as it exists: the state dir (0700),
the initramfs, netns NAME (bridges br-r, br-m; taps r1 r2 m1 m2), the host veth NAME-m0
(the lab's management .1/24, see topology), a sparse disk per node, the two qemu.  `down` removes exactly what lab.json
lists, qemu by PID; a failed `up` runs `down` itself."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import client, initrd, vm
from lab.client import ExecResult, LabError
from lab.topology import DISK_MB, NODES, PERSIST_MB, Layout, Node, node
from reconciler import _cmd

BOOT_TIMEOUT_S = 120.0
_KERNEL_TROUBLE = re.compile(r"soft lockup|hard LOCKUP|rcu: INFO|rcu_preempt kthread starved|"
                             r"BUG:|Oops|Kernel panic|blocked for more than|Call Trace")


@dataclass
class Journal:
    """What `up` created, so that `down` removes that and nothing else."""

    netns: bool = False
    host_veth: bool = False
    state_dir: bool = False
    kernel: str = ""
    vmlinuz: str = ""
    files: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    qemu: dict[str, int] = field(default_factory=dict)
    # [PID, start time] of the process the lab lives and dies with (a test run); None for a
    # lab brought up from the command line, which stays up until `down`.
    owner: list[int] | None = None

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as e:
            raise LabError(f"unreadable lab journal {path}: {e}; remove the lab's pieces by hand") from e

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1))
        os.replace(tmp, path)


def _ip(*args: str) -> None:
    res = _cmd.run(["ip", *args], timeout=15)
    if not res.ok:
        raise LabError(f"network set-up failed: {res.describe()}")


def _netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def _link_exists(name: str, netns: str | None = None) -> bool:
    return _cmd.run(["ip", *(["-n", netns] if netns else []), "link", "show", "dev", name], timeout=10).ok


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(owner: list[int] | None) -> bool:
    return owner is not None and _start_time(owner[0]) == owner[1]


def _qemu_of(name: str) -> list[tuple[int, Path]]:
    """(PID, pidfile) of every running qemu this lab name started, whatever its state dir."""
    wanted = {f"{name}-{n.name}" for n in NODES}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = [a.decode(errors="replace") for a in f.read().split(b"\0")]
        except OSError:
            continue
        if not args or os.path.basename(args[0]) != vm.QEMU:
            continue
        opts = dict(zip(args[1:], args[2:]))
        if opts.get("-name") in wanted and "-pidfile" in opts:
            found.append((int(entry), Path(opts["-pidfile"])))
    return found


class Lab:
    def __init__(self, layout: Layout, owned: bool = False):
        """`owned`: the lab lives as long as this process (tests); a later `up` of the same
        name removes it once this process is gone, whatever killed it."""
        self.lay = layout
        self.owned = owned

    # -- up ------------------------------------------------------------------------------------

    def up(self) -> float:
        """Build everything and wait until both agents answer; seconds taken.  Cleans up on failure."""
        started = time.monotonic()
        self._preflight()
        j = Journal(owner=[os.getpid(), _start_time(os.getpid()) or 0] if self.owned else None)
        try:
            self._state_dir(j)
            kernel, vmlinuz = initrd.find_kernel()
            j.kernel, j.vmlinuz = kernel, vmlinuz
            self._record(j, file=self.lay.initrd)
            initrd.build(self.lay.initrd, kernel)
            self._network(j)
            for n in NODES:
                self._node(j, n, vmlinuz)
            self.wait_agents(BOOT_TIMEOUT_S)
        except BaseException:
            self.down()
            raise
        return time.monotonic() - started

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, taps)")
        for prog in (vm.QEMU, "ip"):
            if not any(os.access(os.path.join(d, prog), os.X_OK) for d in _cmd.SYS_PATH.split(":")):
                raise LabError(f"{prog} not found: apt-get install --no-install-recommends qemu-system-x86 iproute2")
        if not os.path.exists(initrd.BUSYBOX):
            raise LabError(f"{initrd.BUSYBOX} missing: apt-get install busybox-static")
        self.reap_leftovers()
        if self.lay.journal.exists():
            raise LabError(f"a lab is already up in {self.lay.state} (run `down` first)")
        if _netns_exists(self.lay.netns) or _link_exists(self.lay.host_veth):
            raise LabError(f"netns {self.lay.netns} or link {self.lay.host_veth} exists but is not this lab's")
        mgmt = f"{self.lay.mgmt_net}.0/24"
        if _cmd.run(["ip", "-o", "addr", "show", "to", mgmt], timeout=10).stdout.strip():
            raise LabError(f"{mgmt} is already in use on a host interface (another lab named like "
                           f"{self.lay.name!r}, or a leftover: `python -m lab down` with its state dir)")

    def reap_leftovers(self) -> list[str]:
        """Remove what an earlier lab of this name left behind when the process it lived
        with is gone (a test run killed by SIGKILL, or interrupted before its teardown).
        A lab brought up from the command line (no owner) or one whose owner still runs is
        left alone: `up` then refuses as before.  What was removed, for the log."""
        done: list[str] = []
        states = {self.lay.state}
        for _pid, pidfile in _qemu_of(self.lay.name):
            states.add(pidfile.parent.parent)
        for state in sorted(states):
            other = Lab(Layout(self.lay.name, state, self.lay.code))
            try:
                j = Journal.load(other.lay.journal)
            except LabError:
                continue
            if j is not None and j.owner is not None and not _alive(j.owner):
                done += other.down()
        if not _qemu_of(self.lay.name) and self._netns_orphaned():
            # The pieces are named after the lab and no qemu or live journal uses them.
            for argv in (["ip", "netns", "del", self.lay.netns], ["ip", "link", "del", self.lay.host_veth]):
                if _cmd.run(argv, timeout=15).ok:
                    done.append(" ".join(argv[1:]))
        return done

    def _netns_orphaned(self) -> bool:
        if not (_netns_exists(self.lay.netns) or _link_exists(self.lay.host_veth)):
            return False
        if self.lay.journal.exists():
            return False
        # The netns holds the lab's bridges and taps and nothing else: taps r1/m1 prove it is ours.
        return _link_exists("br-r", self.lay.netns) and _link_exists("r1", self.lay.netns)

    def _record(self, j: Journal, file: Path | None = None, dir_: Path | None = None) -> None:
        if file is not None:
            j.files.append(str(file))
        if dir_ is not None:
            j.dirs.append(str(dir_))
        j.save(self.lay.journal)

    def _state_dir(self, j: Journal) -> None:
        if not self.lay.state.exists():
            self.lay.state.mkdir(parents=True, mode=0o700)
            j.state_dir = True
        os.chmod(self.lay.state, 0o700)
        self._record(j)

    def _network(self, j: Journal) -> None:
        ns = self.lay.netns
        _ip("netns", "add", ns)
        j.netns = True
        self._record(j)
        _ip("-n", ns, "link", "set", "lo", "up")
        for br in ("br-r", "br-m"):
            _ip("-n", ns, "link", "add", br, "type", "bridge")
            _ip("-n", ns, "link", "set", br, "up")
        for n in NODES:
            for tap, br in ((n.repl_tap, "br-r"), (n.mgmt_tap, "br-m")):
                _ip("-n", ns, "tuntap", "add", tap, "mode", "tap")
                _ip("-n", ns, "link", "set", tap, "master", br, "up")
        _ip("link", "add", self.lay.host_veth, "type", "veth", "peer", "name", "hostm", "netns", ns)
        j.host_veth = True
        self._record(j)
        _ip("-n", ns, "link", "set", "hostm", "master", "br-m", "up")
        _ip("addr", "add", f"{self.lay.host_mgmt_ip}/24", "dev", self.lay.host_veth)
        _ip("link", "set", self.lay.host_veth, "up")

    def _node(self, j: Journal, n: Node, vmlinuz: str) -> None:
        d = self.lay.node_dir(n)
        if not d.exists():
            d.mkdir(mode=0o700)
            self._record(j, dir_=d)
        for path in (self.lay.disk(n), self.lay.persist(n), self.lay.pidfile(n), self.lay.console(n), self.lay.sock(n)):
            if path.exists():
                raise LabError(f"{path} already exists: not removing what this lab did not create")
            self._record(j, file=path)
        for path, mb in ((self.lay.disk(n), DISK_MB), (self.lay.persist(n), PERSIST_MB)):
            with open(path, "wb") as disk:
                disk.truncate(mb << 20)
        j.qemu[n.name] = vm.start(self.lay, n, vmlinuz)
        self._record(j)

    def wait_agents(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(NODES)
        while pending:
            n = pending[0]
            try:
                client.ping(self.lay.sock(n), timeout=max(1.0, min(5.0, deadline - time.monotonic())))
                pending.pop(0)
                continue
            except LabError as e:
                last = e
            if time.monotonic() > deadline:
                raise LabError(f"{n.name} did not answer within {timeout:.0f} s ({last}); "
                               f"see {self.lay.console(n)}")
            time.sleep(0.2)

    def keep_consoles(self, dest: Path, limit: int = 60) -> str:
        """Copy each node's serial console (every boot's kernel messages) to dest/console-<node>.log
        before `down` removes them; return the lines that say a guest kernel was in trouble (a
        lockup, an RCU stall, an oops, a panic, a hung task) as one printable block, or ""."""
        trouble = []
        for n in NODES:
            src = self.lay.console(n)
            if not src.exists():
                continue
            text = src.read_text(errors="replace")
            (dest / f"console-{n.name}.log").write_text(text)
            trouble += [f"{n.name}: {ln}" for ln in text.splitlines() if _KERNEL_TROUBLE.search(ln)]
        if not trouble:
            return ""
        return (f"----- guest kernel trouble ({len(trouble)} lines, first {limit}; consoles in {dest}) -----\n"
                + "\n".join(trouble[:limit]))

    # -- down ----------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove what lab.json lists (qemu by PID first); a list of what was removed."""
        j = Journal.load(self.lay.journal)
        if j is None:
            return []
        done, errors = [], []
        for name, pid in j.qemu.items():
            try:
                if vm.stop(pid, self.lay.pidfile(node(name))):
                    done.append(f"qemu {name} (PID {pid})")
            except LabError as e:
                errors.append(str(e))
        if j.netns and _netns_exists(self.lay.netns):
            res = _cmd.run(["ip", "netns", "del", self.lay.netns], timeout=15)
            (done.append(f"netns {self.lay.netns}") if res.ok else errors.append(res.describe()))
        if j.host_veth and _link_exists(self.lay.host_veth):
            time.sleep(0.5)  # deleting the netns deletes its veth peer, asynchronously
            res = _cmd.run(["ip", "link", "del", self.lay.host_veth], timeout=15)
            if res.ok or not _link_exists(self.lay.host_veth):
                done.append(f"link {self.lay.host_veth}")
            else:
                errors.append(res.describe())
        for f in j.files:
            if os.path.lexists(f):
                os.unlink(f)
                done.append(f)
        for d in reversed(j.dirs):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                errors.append(f"cannot remove {d}: {e}")
        if errors:
            raise LabError("lab down incomplete (lab.json kept): " + "; ".join(errors))
        self.lay.journal.unlink(missing_ok=True)
        if j.state_dir:
            try:
                os.rmdir(self.lay.state)
            except OSError as e:
                raise LabError(f"cannot remove {self.lay.state}: {e}") from e
        return done

    # -- use -----------------------------------------------------------------------------------

    def _require_up(self) -> Journal:
        j = Journal.load(self.lay.journal)
        if j is None:
            raise LabError(f"no lab is up in {self.lay.state} (run `up` first)")
        return j

    def exec(self, name: str, argv: list[str], timeout: float = 60.0, input_text: str | None = None,
             env: dict[str, str] | None = None) -> ExecResult:
        self._require_up()
        return client.exec_argv(name, self.lay.sock(node(name)), argv, timeout, input_text, env)

    def spawn(self, name: str, argv: list[str]) -> int:
        self._require_up()
        return client.spawn(self.lay.sock(node(name)), argv)

    def power_off(self, name: str) -> None:
        """Cut `name`'s power: its qemu is killed (SIGKILL), no shutdown, nothing flushed by
        the guest.  Its disks stay, for `power_on`."""
        j = self._require_up()
        n = node(name)
        pid = j.qemu.get(name)
        if pid is None or not vm.is_ours(pid, self.lay.pidfile(n)):
            raise LabError(f"{name} is not running")
        vm.stop(pid, self.lay.pidfile(n), term=False)

    def wait_off(self, name: str, timeout: float = 120.0) -> float:
        """Until `name`'s qemu has exited (a shutdown or reboot inside the guest ends it:
        qemu runs with -no-reboot); seconds waited."""
        j = self._require_up()
        n, t0 = node(name), time.monotonic()
        pid = j.qemu.get(name)
        while pid is not None and vm.is_ours(pid, self.lay.pidfile(n)):
            if time.monotonic() - t0 > timeout:
                raise LabError(f"{name} (qemu PID {pid}) still runs after {timeout:.0f} s")
            time.sleep(0.2)
        return time.monotonic() - t0

    def running(self, name: str) -> bool:
        j = self._require_up()
        pid = j.qemu.get(name)
        return pid is not None and vm.is_ours(pid, self.lay.pidfile(node(name)))

    def power_on(self, name: str) -> float:
        """Start `name` again from its disks and wait until its lab agent answers; seconds."""
        j = self._require_up()
        n, t0 = node(name), time.monotonic()
        if self.running(name):
            raise LabError(f"{name} is already running")
        self.lay.sock(n).unlink(missing_ok=True)
        j.qemu[name] = vm.start(self.lay, n, j.vmlinuz or initrd.find_kernel()[1])
        j.save(self.lay.journal)
        deadline = t0 + BOOT_TIMEOUT_S
        while True:
            try:
                client.ping(self.lay.sock(n), timeout=max(1.0, min(5.0, deadline - time.monotonic())))
                return time.monotonic() - t0
            except LabError as e:
                if time.monotonic() > deadline:
                    raise LabError(f"{name} did not answer within {BOOT_TIMEOUT_S:.0f} s after power-on ({e}); "
                                   f"see {self.lay.console(n)}") from e
            time.sleep(0.2)

    def set_link(self, name: str, up: bool) -> None:
        """Host side of `name`'s replication cable: tap up (restore) or down (cut)."""
        self._require_up()
        _ip("-n", self.lay.netns, "link", "set", node(name).repl_tap, "up" if up else "down")

    def status(self) -> dict[str, Any]:
        j = Journal.load(self.lay.journal)
        if j is None:
            return {"up": False, "state": str(self.lay.state)}
        nodes = {}
        for n in NODES:
            pid = j.qemu.get(n.name)
            info: dict[str, Any] = {"qemu_pid": pid, "running": bool(pid and vm.is_ours(pid, self.lay.pidfile(n))),
                                    "repl_ip": n.repl_ip, "mgmt_ip": n.mgmt_ip(self.lay.mgmt_net)}
            res = _cmd.run(["ip", "-n", self.lay.netns, "-o", "link", "show", "dev", n.repl_tap], timeout=10)
            info["repl_link"] = "down" if ",UP" not in res.stdout and "<UP" not in res.stdout else "up"
            try:
                info["agent_uptime_s"] = client.ping(self.lay.sock(n), timeout=3.0).get("uptime")
            except LabError as e:
                info["agent"] = str(e)
            nodes[n.name] = info
        return {"up": True, "state": str(self.lay.state), "kernel": j.kernel, "netns": self.lay.netns, "nodes": nodes}
