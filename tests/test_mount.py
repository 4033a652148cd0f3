"""Mounts: the mountinfo parser on a verbatim capture, and real mount/unmount of an ext4
filesystem on a loop device (made by mkfs.ext4 on a temp file), including a busy unmount
and the holder scan that the DRBD observer uses for `open`.  Everything is torn down."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import _cmd
from reconciler.execute.mount import MountError, mount, unmount
from reconciler.model import MountObs
from reconciler.observe.mount import mounts_at, parse_mountinfo, read_mounts
from reconciler.observe.openers import device_openers, is_open
from tests.conftest import need, need_root

FIX = Path(__file__).parent / "fixtures" / "mount" / "mountinfo.host.txt"
WEIRD = "/tmp/rc mnt\tx\\y"


def test_parse_mountinfo_escapes_and_optional_fields() -> None:
    entries = parse_mountinfo(FIX.read_text())
    assert [e.mount_id for e in entries] == [22, 24, 27, 42, 43, 49, 50]
    netns = entries[3]
    assert (netns.root, netns.mountpoint) == ("/run/netns", "/run/netns")
    assert (netns.fstype, netns.source) == ("ext4", "/dev/vda")
    assert (entries[5].mountpoint, entries[5].major, entries[5].minor) == (WEIRD, 0, 40)
    assert entries[6].options() == ("rw", "noexec", "relatime", "size=2048k")


def test_mounts_at_returns_the_topmost_mount() -> None:
    found = mounts_at(parse_mountinfo(FIX.read_text()), [WEIRD, "/nowhere", "/run/netns/"])
    assert found == {
        WEIRD: MountObs(source="rcstack", fstype="tmpfs", options=("rw", "noexec", "relatime", "size=2048k")),
        "/run/netns/": MountObs(
            source="/dev/vda", fstype="ext4",
            options=("rw", "relatime", "discard", "resv_strict", "resuid=65534", "resgid=65534"),
        ),
    }


@pytest.fixture
def loopdev(tmp_path: Path) -> Iterator[str]:
    need_root()
    for tool in ("losetup", "mkfs.ext4", "mount", "umount"):
        need(shutil.which(tool, path=_cmd.SYS_PATH) is not None, f"needs {tool}")
    need(os.path.exists("/dev/loop-control"), "needs loop devices")
    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True, timeout=60)
    dev = subprocess.run(["losetup", "--find", "--show", str(img)], check=True, capture_output=True,
                         text=True, timeout=30).stdout.strip()
    try:
        yield dev
    finally:  # by device, not through the parser under test: `umount DEV` until none is left
        for _ in range(5):
            if subprocess.run(["umount", dev], capture_output=True, timeout=60).returncode != 0:
                break
        subprocess.run(["losetup", "-d", dev], timeout=30)


def test_mount_and_unmount_ext4(loopdev: str, tmp_path: Path) -> None:
    mp = str(tmp_path / "not yet" / "mnt point")  # created by mount(); spaces exercise \040
    mount(loopdev, mp, "ext4", ["noatime"])
    got = read_mounts([mp])[mp]
    assert (got.source, got.fstype) == (loopdev, "ext4") and "noatime" in got.options
    mount(loopdev, mp, "ext4", ["noatime"])  # already there: nothing to do
    assert len([e for e in parse_mountinfo(Path("/proc/self/mountinfo").read_text()) if e.mountpoint == mp]) == 1
    assert device_openers(loopdev) == [f"mounted on {mp}"] and is_open(loopdev) is True
    unmount(mp)
    assert read_mounts([mp]) == {}
    unmount(mp)  # not mounted: nothing to do
    assert device_openers(loopdev) == [] and is_open(loopdev) is False


def test_mount_refuses_when_something_else_is_there(loopdev: str, tmp_path: Path) -> None:
    mp = str(tmp_path / "mp")
    os.mkdir(mp)
    subprocess.run(["mount", "-t", "tmpfs", "rc-other", mp], check=True, timeout=30)
    try:
        with pytest.raises(MountError, match="rc-other"):
            mount(loopdev, mp, "ext4")
    finally:
        subprocess.run(["umount", mp], timeout=30)


def test_mount_refuses_a_mount_point_under_a_directory_another_user_owns(loopdev: str, tmp_path: Path) -> None:
    """The owner of `shared` could replace `mnt` by a link to /etc between the check and the
    mount: root mounts only where every directory above is root's."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 65534, 65534)
    mp = shared / "mnt"
    with pytest.raises(MountError, match=f"refusing the mount point {mp}: its directory {shared} is owned by .*"
                                         f"fix: chown root {shared}"):
        mount(loopdev, str(mp), "ext4")
    assert not mp.exists() and read_mounts([str(mp)]) == {}
    os.chown(shared, 0, 0)
    mount(loopdev, str(mp), "ext4")
    try:
        assert read_mounts([str(mp)])[str(mp)].source == loopdev
    finally:
        unmount(str(mp))


def _holder(args: list[str], cwd: str | None = None) -> subprocess.Popen[bytes]:
    code = "import os,sys,time\n" + "\n".join(args) + "\nprint('ready', flush=True)\ntime.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_busy_unmount_names_the_holder(loopdev: str, tmp_path: Path) -> None:
    mp = str(tmp_path / "busy")
    mount(loopdev, mp, "ext4")
    proc = _holder([f"f = open({mp + '/held'!r}, 'w')"])
    try:
        with pytest.raises(MountError) as e:
            unmount(mp)
        assert "busy" in str(e.value) and str(proc.pid) in str(e.value)
        assert read_mounts([mp])[mp].source == loopdev  # still mounted: never lazily detached
    finally:
        proc.kill()
        proc.wait()
    unmount(mp)
    assert read_mounts([mp]) == {}


def test_openers_sees_a_process_holding_the_device(loopdev: str) -> None:
    proc = _holder([f"fd = os.open({loopdev!r}, os.O_RDONLY)"])
    try:
        found = device_openers(loopdev)
        assert found is not None and len(found) == 1
        assert found[0].startswith(f"opened by pid {proc.pid} (") and found[0].endswith(f") as {loopdev}")
        assert is_open(loopdev) is True
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while device_openers(loopdev) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert device_openers(loopdev) == []
    assert device_openers("/nonexistent/dev") is None


def test_argument_validation() -> None:
    with pytest.raises(ValueError):
        mount("relative", "/mnt/x", "ext4")
    with pytest.raises(ValueError):
        mount("/dev/loop0", "/mnt/x", "ext4; reboot")
    with pytest.raises(ValueError):
        mount("/dev/loop0", "/mnt/x", "ext4", ["ro", "x y"])
    with pytest.raises(ValueError):
        unmount("mnt")
