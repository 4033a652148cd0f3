"""Mount and unmount a filesystem with mount(8)/umount(8), argv lists and timeouts.

Both are idempotent: mounting what is already mounted there, or unmounting what is not
mounted, does nothing.  A busy unmount is reported with its holders (fuser -vm when it is
installed, plus our own /proc scan); never lazily (-l) or forcibly (-f) unmounted, since
the DRBD device would stay open and the demote after it would fail anyway.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from reconciler import _cmd, trust
from reconciler.observe.mount import read_mounts
from reconciler.observe.openers import device_openers

MOUNT_TIMEOUT_S = 120.0  # ext4 journal replay after a crash can take a while
UMOUNT_TIMEOUT_S = 60.0
_FSTYPE_RE = re.compile(r"^[a-z0-9_.]{1,32}$")
_OPTION_RE = re.compile(r"^[A-Za-z0-9_=.,:/+-]{1,128}$")


class MountError(Exception):
    """mount/umount did not reach its postcondition; the message says why."""


def _check_path(path: str, what: str) -> str:
    if not path.startswith("/") or "\x00" in path or len(path) > 4096:
        raise ValueError(f"{what} must be an absolute path: {path!r}")
    return os.path.normpath(path)


def mount(device: str, mountpoint: str, fstype: str, options: Sequence[str] = ()) -> None:
    """Mount `device` on `mountpoint` (created, mode 0755, if missing), refused when a directory
    above the mount point is not root's (`trust.check_dirs`)."""
    device = _check_path(device, "device")
    mountpoint = _check_path(mountpoint, "mount point")
    if not _FSTYPE_RE.match(fstype):
        raise ValueError(f"invalid filesystem type {fstype!r}")
    for opt in options:
        if not _OPTION_RE.match(opt):
            raise ValueError(f"invalid mount option {opt!r}")
    current = read_mounts([mountpoint]).get(mountpoint)
    if current is not None:
        if os.path.realpath(current.source) == os.path.realpath(device):
            return
        raise MountError(f"{mountpoint}: {current.source} ({current.fstype}) is mounted there, not {device}")
    try:  # a user who can write a directory above could swap the mount point for a link to /etc
        trust.check_dirs(mountpoint, "mount point")
    except trust.UntrustedError as e:
        raise MountError(str(e)) from None
    os.makedirs(mountpoint, mode=0o755, exist_ok=True)
    argv = ["mount", "-t", fstype, *(["-o", ",".join(options)] if options else []), device, mountpoint]
    res = _cmd.run(argv, timeout=MOUNT_TIMEOUT_S)
    if not res.ok:
        raise MountError(f"cannot mount {device} on {mountpoint}: {res.describe()}")


def _fuser(mountpoint: str) -> str:
    res = _cmd.run(["fuser", "-vm", mountpoint], timeout=15, merge_stderr=True)
    if res.missing or res.timed_out:
        return ""
    # fuser warns once per fd it may not stat (e.g. a PID 1 in another user namespace): drop those
    lines = [ln.rstrip() for ln in res.stdout.splitlines() if ln.strip() and not ln.startswith("Cannot stat")]
    return "\n".join(lines)


def holders(mountpoint: str, device: str | None = None) -> str:
    """Who keeps `mountpoint` busy, as text: fuser -vm output, else our own scan of `device`."""
    found = _fuser(mountpoint)
    if found:
        return found
    openers = device_openers(device) if device else None
    return "; ".join(openers) if openers else "no holder found (try `lsof +f -- " + mountpoint + "`)"


def unmount(mountpoint: str) -> None:
    """Unmount `mountpoint`; on "target is busy" the error names the holders."""
    mountpoint = _check_path(mountpoint, "mount point")
    current = read_mounts([mountpoint]).get(mountpoint)
    if current is None:
        return
    res = _cmd.run(["umount", mountpoint], timeout=UMOUNT_TIMEOUT_S)
    if res.ok:
        return
    if "busy" in res.stderr:
        # one line: the agent logs an action's first line only, and the holders are the point
        found = "; ".join(" ".join(ln.split()) for ln in holders(mountpoint, current.source).splitlines() if ln.strip())
        raise MountError(f"cannot unmount {mountpoint}: it is busy. Holders: {found}")
    raise MountError(f"cannot unmount {mountpoint}: {res.describe()}")
