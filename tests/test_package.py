"""The Debian package on a clean Debian 12 root (slow: a few minutes; see README "Installing
on real nodes").

`scripts/package` builds revision 1 and, while the first checks run, revision 2.  A clean
root comes from `debootstrap --variant=minbase bookworm` against the configured Debian mirror
(the downloaded packages are cached as a --make-tarball in /var/cache/reconciler-tests/, so
a repeat run only unpacks them).  In it (chroot, /proc mounted, no systemd):

- `apt-get install ./reconciler_*.deb` resolves the Depends from the mirror;
- help, validate of the shipped example, status (no traceback), modes of /etc/reconciler and
  /var/lib/reconciler, the unit installed and not enabled, completion, man page, docs;
- the agent (`reconciler run`) runs a stand-in managed service it starts itself, next to a
  PostgreSQL-like process started in the agent's own session;
- `dpkg -i` of revision 2 while it runs: the agent, both processes, /etc/reconciler and the
  state survive; then the agent stops (the processes survive, as KillMode=process keeps them);
- `dpkg -r` keeps /etc/reconciler and the state; `dpkg --purge` removes the state directory
  and keeps what the operator wrote in /etc/reconciler.

Everything it starts (chroot processes, mounts, the tree) is removed in `finally`, also on
failure or Ctrl-C, and the test checks /proc/mounts for leftovers.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need, need_root

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("RECONCILER_TEST_CACHE", "/var/cache/reconciler-tests"))
SUITE = "bookworm"
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root",
              "DEBIAN_FRONTEND": "noninteractive"}
EXAMPLE = "/usr/share/doc/reconciler/examples/cluster.example.yaml"


def debian_mirror() -> str:
    """The Debian mirror apt is configured with (deb822 .sources or one-line .list), not -security."""
    if os.environ.get("RECONCILER_DEBIAN_MIRROR"):
        return os.environ["RECONCILER_DEBIAN_MIRROR"]
    files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]
    for name in files:
        try:
            text = Path(name).read_text()
        except OSError:
            continue
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
                if SUITE in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                    return str(fields.get("URIs", "").split()[0])
        else:
            for line in text.splitlines():
                m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
                if m and m.group(2) == SUITE:
                    return m.group(1)
    return "http://deb.debian.org/debian"


class Chroot:
    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, script: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["chroot", str(self.root), "/bin/sh", "-ec", script], env=CHROOT_ENV,
                           capture_output=True, text=True, timeout=timeout, check=False)
        if check and r.returncode != 0:
            raise AssertionError(f"in the chroot: {script}\nexit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def mounts(self) -> list[str]:
        """Mount points at or below the root, deepest first (/proc/mounts escapes spaces as \\040)."""
        prefix = str(self.root)
        points = [line.split()[1].replace("\\040", " ") for line in Path("/proc/mounts").read_text().splitlines()]
        return sorted((p for p in points if p == prefix or p.startswith(prefix + "/")), key=len, reverse=True)

    def pids(self) -> list[int]:
        """Processes whose root directory is this chroot: only ever ones this test started."""
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/root") == str(self.root):
                        out.append(int(entry))
                except OSError:
                    pass
        return out

    def teardown(self) -> None:
        for _ in range(3):
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not pids:
                break
            time.sleep(0.2)
        for point in self.mounts():
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def alive(pid: int) -> bool:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st.rsplit(")", 1)[1].split()[0] != "Z"


def digest_tree(d: Path) -> dict[str, Any]:
    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(d.rglob("*")) if p.is_file()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, cond: Any, timeout: float = 60.0, log: Path | None = None) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.2)


class Phases:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.times: list[tuple[str, float]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.monotonic()
        try:
            yield
        finally:
            self.times.append((name, time.monotonic() - t))

    def report(self) -> str:
        parts = ", ".join(f"{n} {s:.0f} s" for n, s in self.times)
        return f"package test {time.monotonic() - self.t0:.0f} s: {parts}"


def build(revision: int, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([str(ROOT / "scripts" / "package"), "--revision", str(revision), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def built(proc: subprocess.Popen[str], out: Path, revision: int) -> Path:
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-4000:]
    debs = sorted(out.glob(f"reconciler_*-{revision}_*.deb"))
    assert len(debs) == 1, output[-2000:]
    print(output.strip().splitlines()[-1])
    return debs[0]


def run_group(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """subprocess.run in a process group of its own, all of it killed if the test is interrupted
    (debootstrap's second stage runs as children that a kill of debootstrap alone would leave)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def bootstrap(target: Path, mirror: str, scratch: Path) -> None:
    """A clean minbase bookworm in `target`, from the cached download tarball (made on first use)."""
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    tarball = CACHE / f"debootstrap-{SUITE}-minbase-{arch}.tgz"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_name(f"{tarball.name}.{os.getpid()}.tmp")
        try:
            r = run_group(["debootstrap", "--variant=minbase", f"--make-tarball={partial}", SUITE,
                           str(scratch / "download"), mirror], timeout=900)
            assert r.returncode == 0, f"debootstrap --make-tarball from {mirror}:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
            os.replace(partial, tarball)
        finally:
            partial.unlink(missing_ok=True)
            shutil.rmtree(scratch / "download", ignore_errors=True)
    r = run_group(["debootstrap", "--variant=minbase", f"--unpack-tarball={tarball}", SUITE, str(target), mirror],
                  timeout=900)
    if r.returncode != 0:
        tarball.unlink(missing_ok=True)  # a damaged cache is made again next time
        raise AssertionError(f"debootstrap --unpack-tarball:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")


def spec_text(port: int) -> str:
    """One node, mx1, Primary with the peer fenced: no addresses, DRBD or PostgreSQL (the chroot
    shares this machine's network and kernel), one service the agent starts by its commands."""
    return f"""\
cluster: pkgtest
nodes:
  mx1: {{address: 127.0.0.1}}
  mx2: {{address: 127.0.0.2}}
primary: mx1
fenced: [mx2]
services:
  - name: standin
    commands:
      start: [/bin/sh, -c, "setsid /bin/sleep 100000 </dev/null >/dev/null 2>&1 & echo $! >/run/standin.pid"]
      stop: [/bin/sh, -c, "kill $(cat /run/standin.pid)"]
      status: [/bin/sh, -c, "kill -0 $(cat /run/standin.pid)"]
agent:
  peer_port: {port}
  peer_secret_file: /etc/reconciler/peer.secret
  drift_check_interval_s: 1
"""


def test_package_installs_upgrades_and_removes_on_clean_debian_12() -> None:
    need_root()
    for tool in ("debootstrap", "dpkg-deb", "chroot", "mount"):
        need(shutil.which(tool) is not None, f"needs {tool} (scripts/setup installs debootstrap)")
    need(os.path.exists("/usr/bin/python3.11"), "needs Debian's python3.11 and python3-venv (scripts/setup)")
    phases = Phases()
    mirror = debian_mirror()
    tmp = Path(tempfile.mkdtemp(prefix="reconciler-pkgtest."))
    chroot = Chroot(tmp / "root")
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)
    builds: list[subprocess.Popen[str]] = []
    agent: subprocess.Popen[bytes] | None = None
    try:
        out = tmp / "dist"
        builds.append(build(1, out))
        with phases("debootstrap"):
            bootstrap(chroot.root, mirror, tmp)
        with phases("build (beside debootstrap)"):
            deb1 = built(builds[0], out, 1)
        builds.append(build(2, out))  # needed only for the upgrade: built while the checks run

        subprocess.run(["mount", "-t", "proc", "proc", str(chroot.path("/proc"))], check=True)
        shutil.copyfile("/etc/resolv.conf", chroot.path("/etc/resolv.conf"))
        shutil.copy(deb1, chroot.path("/tmp"))
        with phases("apt-get install"):
            chroot.run("apt-get update -qq", timeout=600)
            chroot.run(f"apt-get install -y -qq --no-install-recommends /tmp/{deb1.name}", timeout=600)
        version1 = chroot.run("dpkg-query -W -f '${Version}' reconciler").stdout
        assert version1.endswith("-1"), version1

        with phases("checks"):
            chroot.run("reconciler --help >/dev/null; test -s /usr/share/man/man1/reconciler.1.gz")
            r = chroot.run(f"reconciler validate {EXAMPLE}")
            assert "valid" in r.stdout, r.stdout
            r = chroot.run("reconciler status", check=False)  # no /etc/reconciler/cluster.yaml yet
            assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
            assert r.stderr.startswith("reconciler: ") and "/etc/reconciler/cluster.yaml" in r.stderr, r.stderr
            r = chroot.run(f"reconciler status {EXAMPLE} --node mx1", check=False, timeout=120)
            assert "Traceback" not in r.stdout + r.stderr and "mx1: cluster mail" in r.stdout, r.stdout + r.stderr
            for d in ("/etc/reconciler", "/var/lib/reconciler"):
                st = chroot.path(d).stat()
                assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 0, 0), (d, oct(st.st_mode))
            unit = chroot.path("/lib/systemd/system/reconciler.service").read_text()
            assert "\nExecStart=/usr/bin/reconciler run " in unit and "\nKillMode=process\n" in unit, unit
            enabled = list(chroot.path("/etc/systemd/system").glob("**/reconciler.service"))
            assert not enabled, f"the unit must not be enabled: {enabled}"
            chroot.run("bash -c '. /usr/share/bash-completion/completions/reconciler && complete -p reconciler'")
            readme = chroot.path("/usr/share/doc/reconciler/README.Debian").read_text()
            assert "peer.secret" in readme and "etcd" in readme
            assert chroot.path("/usr/share/doc/reconciler/operating.md").exists()
            assert chroot.path("/usr/share/zsh/vendor-completions/_reconciler").exists()

        # The operator configures the node; the agent runs with a stand-in service, next to a
        # PostgreSQL-like process in its own session (as pg_ctl's postmaster is, in the unit).
        chroot.run("umask 077; head -c 48 /dev/urandom | base64 >/etc/reconciler/peer.secret")
        chroot.path("/etc/reconciler/cluster.yaml").write_text(spec_text(free_port()))
        os.chmod(chroot.path("/etc/reconciler/cluster.yaml"), 0o600)
        log = tmp / "agent.log"
        with open(log, "wb") as f:
            agent = subprocess.Popen(
                ["chroot", str(chroot.root), "/bin/sh", "-c", "/bin/sleep 100000 & echo $! >/run/pglike.pid; "
                 "exec reconciler run /etc/reconciler/cluster.yaml --node mx1 --state-dir /var/lib/reconciler"],
                env=CHROOT_ENV, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        state = chroot.path("/var/lib/reconciler/state-mx1.json")
        with phases("agent converges"):
            wait_for("the agent to start the stand-in service and converge",
                     lambda: "converged at" in log.read_text() and state.exists(), 120, log)
        standin = int(chroot.path("/run/standin.pid").read_text())
        pglike = int(chroot.path("/run/pglike.pid").read_text())
        assert alive(standin) and alive(pglike)
        etc_before = digest_tree(chroot.path("/etc/reconciler"))

        with phases("build 2 (beside the checks)"):
            deb2 = built(builds[1], out, 2)
        shutil.copy(deb2, chroot.path("/tmp"))
        with phases("upgrade"):
            r = chroot.run(f"dpkg -i /tmp/{deb2.name}")
        assert chroot.run("dpkg-query -W -f '${Version}' reconciler").stdout.endswith("-2")
        assert agent.poll() is None, "the upgrade stopped the agent\n" + log.read_text()[-2000:]
        assert alive(standin), "the upgrade killed the managed service"
        assert alive(pglike), "the upgrade killed the PostgreSQL-like process in the agent's session"
        assert digest_tree(chroot.path("/etc/reconciler")) == etc_before
        assert state.exists(), "the upgrade removed the agent's state"
        assert stat.S_IMODE(chroot.path("/etc/reconciler").stat().st_mode) == 0o700
        chroot.run(f"reconciler validate /etc/reconciler/cluster.yaml {EXAMPLE}")

        # Stopping the agent (what `systemctl stop` does with KillMode=process) leaves both.
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        assert alive(standin) and alive(pglike), "stopping the agent took its services with it"

        with phases("remove + purge"):
            chroot.run("dpkg -r reconciler")
            assert chroot.run("dpkg-query -W -f '${db:Status-Status}' reconciler").stdout == "config-files"
            assert not chroot.path("/opt/reconciler").exists() and not os.path.lexists(chroot.path("/usr/bin/reconciler"))
            assert digest_tree(chroot.path("/etc/reconciler")) == etc_before, "dpkg -r changed /etc/reconciler"
            assert state.exists(), "dpkg -r removed the state directory"
            assert alive(standin) and alive(pglike)
            chroot.run("dpkg --purge reconciler")
            assert not chroot.path("/var/lib/reconciler").exists(), "purge keeps the state directory"
            assert digest_tree(chroot.path("/etc/reconciler")) == etc_before, "purge touched what the operator wrote"
            r = chroot.run("dpkg-query -W -f '${db:Status-Status}' reconciler", check=False)
            assert r.stdout in ("", "not-installed"), r.stdout
    finally:
        for proc in builds:  # its own process group: scripts/package and its pip
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.communicate()
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait()
        chroot.teardown()
        leftover = chroot.mounts()
        if not leftover:
            shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
        print(phases.report())
    assert not leftover, f"mounts left under {chroot.root}: {leftover}"
    assert not tmp.exists(), f"{tmp} left behind"
