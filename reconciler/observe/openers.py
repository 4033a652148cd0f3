"""Who holds a block device open: mounts, stacked devices, swap and process file descriptors.

DRBD 8.4 keeps an open count but exports it nowhere (no sysfs file, no `open:` field in
sh-status or events2; DRBD 9 utils >= 9.29 print `open:`), and refuses to demote with
(-12) while it is non-zero.  So we look for the openers the way fuser/lsof do: mounts of
the device's major:minor in every mount namespace, /sys/dev/block/M:m/holders (dm, md),
/proc/swaps, and /proc/PID/fd links.  Not seen: in-kernel openers without a holder link.
"""

from __future__ import annotations

import os
import stat

from reconciler.observe.mount import parse_mountinfo

_SKIP_LINK_PREFIXES = ("socket:", "pipe:", "anon_inode:", "/proc/", "/sys/", "/memfd:")


def device_number(device: str) -> tuple[int, int] | None:
    """(major, minor) of a block device node, following symlinks; None if it is not one."""
    try:
        st = os.stat(device)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return None


def _mounts(dev: tuple[int, int], pids: list[int]) -> list[str]:
    """Mount points of `dev` in this and every other mount namespace (one read per namespace)."""
    seen_ns: set[str] = set()
    found: list[str] = []
    for pid in ["self", *map(str, pids)]:
        try:
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            continue
        if ns in seen_ns:
            continue
        seen_ns.add(ns)
        text = _read(f"/proc/{pid}/mountinfo")
        for e in parse_mountinfo(text or ""):
            if (e.major, e.minor) == dev:
                where = e.mountpoint if pid == "self" else f"{e.mountpoint} (mount namespace of pid {pid})"
                if f"mounted on {where}" not in found:
                    found.append(f"mounted on {where}")
    return found


def _holders(dev: tuple[int, int]) -> list[str]:
    try:
        names = sorted(os.listdir(f"/sys/dev/block/{dev[0]}:{dev[1]}/holders"))
    except OSError:
        return []
    return [f"used by block device {n}" for n in names]


def _swaps(dev: tuple[int, int]) -> list[str]:
    lines = (_read("/proc/swaps") or "").splitlines()[1:]
    return [f"used as swap ({ln.split()[0]})" for ln in lines if ln.split() and device_number(ln.split()[0]) == dev]


def _comm(pid: int) -> str:
    return (_read(f"/proc/{pid}/comm") or "?").strip()


def _process_fds(dev: tuple[int, int], pids: list[int]) -> list[str]:
    """Processes with an open fd on `dev`: readlink first, stat only /dev paths (never blocks on NFS)."""
    found: list[str] = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            path = f"/proc/{pid}/fd/{fd}"
            try:
                link = os.readlink(path)
                if link.startswith(_SKIP_LINK_PREFIXES) or "/dev/" not in link:
                    continue
                st = os.stat(path)
            except OSError:
                continue
            if stat.S_ISBLK(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == dev:
                found.append(f"opened by pid {pid} ({_comm(pid)}) as {link}")
                break
    return found


def is_open(device: str) -> bool | None:
    """Whether anything holds `device` open, cheapest checks first; None if it is not a block device."""
    dev = device_number(device)
    if dev is None:
        return None
    pids = _pids()
    return bool(_mounts(dev, pids) or _holders(dev) or _swaps(dev) or _process_fds(dev, pids))


def device_openers(device: str) -> list[str] | None:
    """Human descriptions of everything holding `device` open; None if it is not a block device."""
    dev = device_number(device)
    if dev is None:
        return None
    pids = _pids()
    return _mounts(dev, pids) + _holders(dev) + _swaps(dev) + _process_fds(dev, pids)
