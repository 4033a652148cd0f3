"""The lab (lab/) without VMs: initramfs layout, the agent and client protocol over a Unix
socket, the DRBD resource file, and `up` cleaning up after itself when it fails."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import agent, client, initrd, vm
from lab import lab as lab_mod
from lab.client import LabError
from lab.lab import Lab
from lab.provision import resource_config
from lab.topology import Layout, node
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
    assert "disk { fencing dont-care; }" in text and "net { protocol C; }" in text
    with pytest.raises(ValueError):
        resource_config("resource-and-stonith")


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
