"""The lab (lab/) without VMs: initramfs layout, the agent and client protocol over a Unix
socket, the DRBD resource file, and `up` cleaning up after itself when it fails."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import agent, client, initrd, vm
from lab import lab as lab_mod
from lab.client import LabError
from lab.lab import Lab
from lab.provision import resource_config
from lab.topology import BOOT_HOOK, HIDDEN_DIRS, PERSIST_SERIAL, PERSISTED, Layout, node
from tests.conftest import need, need_netns


def parse_cpio(blob: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, data) of a newc archive."""
    out: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while True:
        assert blob[pos:pos + 6] == b"070701"
        f = [int(blob[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        name_end = pos + 110 + f[11]
        name = blob[pos + 110: name_end - 1].decode()
        data_at = name_end + (-name_end % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (f[1], blob[data_at: data_at + f[6]])
        pos = data_at + f[6] + (-(data_at + f[6]) % 4)


def test_initrd_holds_busybox_modules_in_dependency_order_and_the_scripts(tmp_path: Path) -> None:
    try:
        kernel, _ = initrd.find_kernel()
    except FileNotFoundError as e:
        need(False, str(e))
    initrd.build(tmp_path / "i.cpio", kernel)
    files = parse_cpio((tmp_path / "i.cpio").read_bytes())
    assert files["init"][1].startswith(b"#!/bin/busybox sh")
    assert files["dev/console"][0] == 0o020600
    order = files["modules.list"][1].decode().split()
    assert order.index("virtio.ko") < order.index("virtio_pci.ko")
    assert order.index("9pnet.ko") < order.index("9pnet_virtio.ko") < order.index("9p.ko")
    assert {f"lib/m/{m}" for m in order} <= set(files)


def test_resource_config_is_8_4_syntax() -> None:
    text = resource_config()
    assert "  on mx1 { device /dev/drbd0; disk /dev/vda; address 10.0.0.1:7789; meta-disk internal; }\n" in text
    assert "disk { fencing dont-care; }" in text and "net { protocol C; ping-timeout 30; }" in text
    with pytest.raises(ValueError):
        resource_config("resource-and-fun")
    with pytest.raises(ValueError):
        resource_config("dont-care", "/etc/reconciler/fence-peer")  # a handler nothing would call
    text = resource_config("resource-and-stonith", "/etc/reconciler/fence-peer")
    assert 'disk { fencing resource-and-stonith; }\n  handlers { fence-peer "/etc/reconciler/fence-peer"; }\n' in text


def test_layout_refuses_bad_names() -> None:
    for bad in ("", "Lab", "a-b", "toolongname", "1lab"):
        with pytest.raises(ValueError):
            Layout(bad, Path("/run/x"))
    with pytest.raises(ValueError):
        node("mx3")


def test_labs_of_the_tests_and_demos_use_distinct_management_subnets() -> None:
    # the management /24 is on the host: two labs up at once (CI's and an operator's, or the
    # e2e tier's and the DRBD tier's) must not both claim it
    names = ("rlab", "rlabtest", "rlabe2e", "rlabunit", "rlabdemo")
    nets = {n: Layout(n, Path("/run/x")).mgmt_net for n in names}
    assert nets["rlab"] == "10.250.0" and len(set(nets.values())) == len(names)
    lay = Layout("rlabe2e", Path("/run/x"))
    assert lay.host_mgmt_ip == f"{lay.mgmt_net}.1" and node("mx2").mgmt_ip(lay.mgmt_net) == f"{lay.mgmt_net}.12"


def test_agent_runs_argv_with_input_timeout_and_missing_program() -> None:
    r = agent.run({"argv": ["cat"], "input": "hi\n", "timeout": 10})
    assert (r["rc"], r["stdout"], r["timed_out"]) == (0, "hi\n", False)
    r = agent.run({"argv": ["sh", "-c", "echo err >&2; exit 3"], "timeout": 10})
    assert (r["rc"], r["stderr"]) == (3, "err\n")
    r = agent.run({"argv": ["sleep", "30"], "timeout": 0.3})
    assert (r["rc"], r["timed_out"]) == (None, True)
    assert agent.run({"argv": ["/nonexistent/prog"], "timeout": 5})["missing"] is True


@pytest.fixture
def fake_vm(tmp_path: Path) -> Iterator[Path]:
    """A Unix socket served like qemu's chardev + the guest agent, sending a stale reply first."""
    path = tmp_path / "ctl.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                line = conn.makefile("rb").readline().rstrip(b"\n")
                conn.sendall(b'{"id": "stale", "rc": 99}\n')
                agent.handle(conn.fileno(), line)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield path
    finally:
        srv.close()


def test_client_skips_replies_for_other_requests(fake_vm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent, "BG_LOG_DIR", str(fake_vm.parent))
    r = client.exec_argv("mx1", fake_vm, ["echo", "ok"], timeout=10)
    assert (r.rc, r.stdout) == (0, "ok\n")
    assert client.ping(fake_vm)["pong"] == socket.gethostname()
    pid = client.spawn(fake_vm, ["sleep", "0.1"])
    assert pid > 0
    with pytest.raises(LabError):
        client.exec_argv("mx1", fake_vm, ["false"], timeout=10).check()


def test_client_reports_an_absent_vm(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="cannot reach"):
        client.ping(tmp_path / "nothing.sock", timeout=1)


def test_failed_up_removes_everything_it_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_netns()
    try:
        initrd.find_kernel()
    except FileNotFoundError as e:
        need(False, str(e))
    lay = Layout("rlabunit", tmp_path / "state")

    def boom(*_a: object) -> int:
        raise LabError("qemu refused (simulated)")

    monkeypatch.setattr(vm, "start", boom)
    with pytest.raises(LabError, match="simulated"):
        Lab(lay).up()
    assert not lay.state.exists()
    assert not os.path.exists(f"/run/netns/{lay.netns}")
    assert not lab_mod._link_exists(lay.host_veth)
    assert Lab(lay).down() == []


def test_a_checkout_and_venv_under_tmp_or_run_are_shown_to_the_guests(monkeypatch: pytest.MonkeyPatch) -> None:
    # The guests mount fresh tmpfs on /tmp and /run; what the lab needs from there (its
    # agent, the code on PYTHONPATH, the venv's python) goes on the command line to be shown again.
    lay = Layout("rlabunit", Path("/run/x"), Path("/tmp/clone"))
    monkeypatch.setattr("sys.prefix", "/tmp/clone/.venv")
    assert lay.guest_keep == ("/tmp/clone",)
    monkeypatch.setattr("sys.prefix", "/run/venvs/rc")
    assert lay.guest_keep == ("/run/venvs/rc", "/tmp/clone")
    argv = vm.qemu_argv(lay, node("mx1"), "/boot/vmlinuz")
    append = argv[argv.index("-append") + 1].split()
    assert "lab.agent=/tmp/clone/lab/agent.py" in append
    assert "lab.keep=/run/venvs/rc,/tmp/clone" in append
    assert lay.guest_env == {"PYTHONPATH": "/tmp/clone"}
    for bad in ("/tmp/a b", "/tmp/a,b", "/tmp/a:b", "/tmp/a*", "/tmp", "/run/"):
        with pytest.raises(LabError, match="cannot show"):
            vm.qemu_argv(Layout("rlabunit", Path("/run/x"), Path(bad)), node("mx1"), "/boot/vmlinuz")


def test_the_guest_binds_the_kept_paths_back_after_its_tmpfs_mounts() -> None:
    # The VM tier (test_lab_drbd) boots a copy under /tmp; this catches the order mistakes
    # that made an earlier version of lab-init boot without ever showing the copy.
    init, lab_init = initrd.INIT, initrd.LAB_INIT
    assert init.index("mount --move /lower /newroot/.host") < init.index("exec switch_root")
    assert lab_init.index("arg() {") < lab_init.index("$(arg ")  # defined before its first use
    keep = lab_init.index("$(arg lab.keep")
    for hidden in HIDDEN_DIRS:
        mounted = re.search(rf"mount -t tmpfs [^;\n]* {hidden}[;\n]", lab_init)
        assert mounted is not None and mounted.start() < keep
        assert f"{hidden}/*" in lab_init  # kept paths below it are bound back
    assert keep < lab_init.index('mount --bind "/.host$p" "$p"') < lab_init.index("umount /.host")
    assert lab_init.index("umount /.host") < lab_init.index("lab.agent")


def test_each_node_keeps_its_own_disk_and_starts_the_boot_hook_after_it() -> None:
    # A reboot or a power cut must find the spec, the secrets, PostgreSQL's data and DRBD's
    # configuration where they were: they live on the node's second disk, found by serial.
    argv = vm.qemu_argv(Layout("rlabunit", Path("/run/x")), node("mx1"), "/boot/vmlinuz")
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert [d.split(",")[0] for d in drives] == ["file=/run/x/mx1/disk.img", "file=/run/x/mx1/persist.img"]
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device" and "virtio-blk" in argv[i + 1]]
    assert devices == ["virtio-blk-pci,drive=drbd,serial=labdrbd", f"virtio-blk-pci,drive=persist,serial={PERSIST_SERIAL}"]
    append = argv[argv.index("-append") + 1].split()
    assert f"lab.persist={PERSIST_SERIAL}:{','.join(PERSISTED)}" in append and f"lab.boot={BOOT_HOOK}" in append
    assert "/etc/reconciler" in PERSISTED and BOOT_HOOK.startswith("/etc/reconciler/")
    assert "-no-reboot" in argv  # a reboot inside the guest ends qemu; the lab starts it again
    li = initrd.LAB_INIT
    cleaned = li.index("rm -f /etc/drbd.d/*.res")
    found = li.index('cat "$b/serial"')
    bound = li.index('mount --bind "/persist$d" "$d"')
    hook = li.index('"$b" </dev/null')
    assert cleaned < found < li.index("mkfs.ext4") < bound < hook < li.index("lab.agent")
    assert "blkid" in li[found:li.index("mkfs.ext4")]  # formatted only when it holds no filesystem
    assert li.index("ip addr add") < hook  # the agent at boot finds the network up


def _dead_owner() -> list[int]:
    p = subprocess.Popen(["true"])
    start = lab_mod._start_time(p.pid)
    p.wait()
    assert start is not None
    return [p.pid, start]


def test_up_removes_what_a_killed_run_of_its_name_left_and_nothing_live(tmp_path: Path) -> None:
    # A test run killed by SIGKILL leaves its daemonized qemu and its netns: the next `up` of
    # the same name (from another temporary directory) removes them; a lab whose owner still
    # runs, or one brought up from the command line, is not touched.
    need_netns()
    need(shutil.which(vm.QEMU) is not None, "needs qemu-system-x86")
    name = "rlabunit"
    old = Layout(name, tmp_path / "old")
    j = lab_mod.Journal()
    Lab(old)._state_dir(j)
    try:
        Lab(old)._network(j)
        (old.state / "mx1").mkdir(mode=0o700)
        j.dirs.append(str(old.state / "mx1"))
        pidfile = old.pidfile(node("mx1"))
        j.files.append(str(pidfile))
        subprocess.run([vm.QEMU, "-name", f"{name}-mx1", "-machine", "none", "-nodefaults", "-no-user-config",
                        "-display", "none", "-pidfile", str(pidfile), "-daemonize"], check=True, timeout=30)
        pid = vm.read_pid(pidfile)
        assert pid is not None and vm.is_ours(pid, pidfile)
        j.qemu["mx1"] = pid
        new = Lab(Layout(name, tmp_path / "new"))
        for owner in ([os.getpid(), lab_mod._start_time(os.getpid()) or 0], None):
            j.owner = owner
            j.save(old.journal)
            assert new.reap_leftovers() == []
            assert vm.is_ours(pid, pidfile) and os.path.exists(f"/run/netns/{name}")
        j.owner = _dead_owner()
        j.save(old.journal)
        removed = new.reap_leftovers()
        assert f"qemu mx1 (PID {pid})" in removed and f"netns {name}" in removed
        assert not vm.is_ours(pid, pidfile)
        assert not os.path.exists(f"/run/netns/{name}") and not lab_mod._link_exists(old.host_veth)
        assert not old.state.exists()
    finally:
        Lab(old).down()


def test_an_orphaned_netns_of_the_labs_name_is_removed_by_the_next_up(tmp_path: Path) -> None:
    need_netns()
    lay = Layout("rlabunit", tmp_path / "gone")
    j = lab_mod.Journal()
    Lab(lay)._state_dir(j)
    try:
        Lab(lay)._network(j)
        lay.journal.unlink()  # its state directory went with the killed run's temporary files
        assert Lab(Layout("rlabunit", tmp_path / "new")).reap_leftovers()
        assert not os.path.exists("/run/netns/rlabunit") and not lab_mod._link_exists(lay.host_veth)
    finally:
        subprocess.run(["ip", "netns", "del", "rlabunit"], capture_output=True, timeout=15)
        subprocess.run(["ip", "link", "del", lay.host_veth], capture_output=True, timeout=15)


SIGTERM_RUN = '''
import os, subprocess, time
import pytest

@pytest.fixture(scope="module")
def ns():
    subprocess.run(["ip", "netns", "add", NAME], check=True)
    try:
        yield NAME
    finally:
        subprocess.run(["ip", "netns", "del", NAME], check=True)

def test_waits(ns):
    open(READY, "w").close()
    time.sleep(60)
'''


def test_sigterm_to_a_test_run_runs_the_teardowns(tmp_path: Path) -> None:
    # What a VM test starts goes with the run when CI's timeout or `kill` sends SIGTERM.
    need_netns()
    name, ready = f"rcsig{os.getpid() % 100000}", tmp_path / "ready"
    (tmp_path / "test_term.py").write_text(f"NAME = {name!r}\nREADY = {str(ready)!r}\n" + SIGTERM_RUN)
    root = Path(__file__).resolve().parents[1]
    p = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                          "--rootdir", str(tmp_path), str(tmp_path / "test_term.py")], cwd=root,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert ready.exists(), p.communicate(timeout=30)[0].decode()
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=60)[0].decode()
        assert "terminated by signal 15" in out
        assert not os.path.exists(f"/run/netns/{name}")
    finally:
        p.kill()
        p.wait()
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=15)
