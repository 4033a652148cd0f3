"""The DRBD kernel side: which version is there, why the module is missing, and split brain.

Version: `/proc/drbd` line 1 (module loaded), else `drbdadm --version`
(`DRBD_KERNEL_VERSION_CODE=0x08040b`), else `modinfo -F version drbd`.  Split brain: DRBD 8.4
keeps no state flag for it, so we read the kernel log (/dev/kmsg) for
`Split-Brain detected but unresolved`; see `kmsg_split_brain` for the exact rule.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from reconciler import _cmd

Version = tuple[int, int, int]
PROC_DRBD = "/proc/drbd"
MODULES_DIR = "/lib/modules"

_CODE_RE = re.compile(r"^DRBD_KERNEL_VERSION_CODE=0x([0-9a-fA-F]+)\s*$", re.M)
_PROC_RE = re.compile(r"^version: (\d+)\.(\d+)\.(\d+)", re.M)
_BARE_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> Version | None:
    """Kernel-module version from `drbdadm --version`, /proc/drbd or `modinfo -F version drbd`.

    `DRBD_KERNEL_VERSION_CODE=0x000000` (module neither loaded nor found) gives None.
    """
    m = _CODE_RE.search(text)
    if m:
        code = int(m.group(1), 16)
        return (code >> 16, (code >> 8) & 0xFF, code & 0xFF) if code else None
    m = _PROC_RE.search(text) or _BARE_RE.match(text.strip())
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


# -- module diagnosis ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelModules:
    """What /lib/modules/<kernel> holds for DRBD."""

    kernel: str
    has_drbd: bool
    drbd_version: str | None = None  # modinfo's version field, when known


@dataclass(frozen=True)
class ModuleFacts:
    running_kernel: str  # uname -r
    loaded: bool  # /proc/drbd exists
    installed: tuple[KernelModules, ...] = ()  # one per /lib/modules/* directory
    load_error: str = ""  # what modprobe / drbdsetup said, if anything


def _version_key(kernel: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order for kernel release strings: 6.1.0-56-amd64 > 6.1.0-9-amd64."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.findall(r"\d+|[^\d.\-+_]+", kernel))


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if "drbd" in ln.lower() and ln.strip()]
    return lines[0] if lines else ""


def diagnose_module(facts: ModuleFacts) -> str:
    """One message: the running kernel, what is installed where, and the two remedies."""
    run = facts.running_kernel
    by_kernel = {k.kernel: k for k in facts.installed}
    mine = by_kernel.get(run)
    said = _first_line(facts.load_error)
    if mine is not None and mine.has_drbd:
        ver = mine.drbd_version or "(version unknown)"
        return (
            f"DRBD kernel module drbd {ver} is installed for the running kernel {run} but is not loaded "
            f"and could not be loaded{': ' + said if said else ''}. "
            "Run `modprobe drbd` and read `dmesg` for the reason (module signature, unknown symbols)."
        )
    if mine is None:
        where = f"/lib/modules/{run} does not exist: no modules at all are installed for the running kernel"
    else:
        where = f"no drbd module is installed for it under /lib/modules/{run}"
    others = sorted((k for k in facts.installed if k.kernel != run), key=lambda k: _version_key(k.kernel))
    with_drbd = [k for k in others if k.has_drbd]
    if with_drbd:
        best = with_drbd[-1]
        found = f"Kernel {best.kernel} has drbd {best.drbd_version or '(version unknown)'} installed."
        reboot = f"reboot into kernel {best.kernel}, whose drbd module is installed"
    elif others:
        found = f"The newest installed modules belong to kernel {others[-1].kernel}, which has no drbd module either."
        reboot = f"reboot into kernel {others[-1].kernel} after installing a drbd module for it"
    else:
        found = "No other kernel's modules are installed."
        reboot = "reboot into a kernel that has a drbd module (none is installed now)"
    return (
        f"DRBD kernel module not available: the running kernel is {run} (uname -r) and {where}. "
        f"{found}{' (' + said + ')' if said else ''} "
        f"Fix it one of two ways: (1) install the package that provides drbd.ko for exactly kernel {run} "
        "(the distribution's kernel-modules package for that kernel, or a kmod-drbd package built for it), "
        f"then `modprobe drbd`; or (2) {reboot}."
    )


_DEP_RE = re.compile(r"(?:^|/)drbd\.ko(?:\.\w+)?:", re.M)


def _has_drbd(kdir: str) -> bool:
    dep = _read(os.path.join(kdir, "modules.dep"))
    if dep is not None:
        return bool(_DEP_RE.search(dep))
    for _root, _dirs, files in os.walk(kdir):
        if any(f == "drbd.ko" or f.startswith("drbd.ko.") for f in files):
            return True
    return False


def gather_module_facts(load_error: str = "") -> ModuleFacts:
    """Read uname, /proc/drbd and /lib/modules/* (and modinfo for kernels that have drbd)."""
    try:
        kernels = sorted(os.listdir(MODULES_DIR))
    except OSError:
        kernels = []
    installed = []
    for k in kernels:
        has = _has_drbd(os.path.join(MODULES_DIR, k))
        ver = None
        if has:
            res = _cmd.run(["modinfo", "-k", k, "-F", "version", "drbd"], timeout=10)
            ver = (res.stdout.strip() or None) if res.ok else None
        installed.append(KernelModules(k, has, ver))
    return ModuleFacts(os.uname().release, os.path.exists(PROC_DRBD), tuple(installed), load_error)


# -- split brain from the kernel log ------------------------------------------------------------

_CONNECTED_RE = r"conn\( \w+ -> Connected \)"
_SOLVED_RE = r"Split-Brain detected, .*solved"


def kmsg_split_brain(lines: Iterable[str], minor: int) -> bool:
    """True if the last split-brain verdict the kernel logged for drbd<minor> is "unresolved".

    Later lines for the same minor that show the split brain solved (manually or by an
    after-sb policy) or a transition to Connected clear it.  Lines are /dev/kmsg records
    (`prio,seq,usec,flags;text`) or plain dmesg text.
    """
    dev = re.compile(rf"\bdrbd{minor}\b")
    unresolved = False
    for raw in lines:
        text = raw.split(";", 1)[1] if re.match(r"^\d+,\d+,\d+,[^;]*;", raw) else raw
        if not dev.search(text):
            continue
        if "Split-Brain detected but unresolved" in text:
            unresolved = True
        elif re.search(_SOLVED_RE, text) or re.search(_CONNECTED_RE, text):
            unresolved = False
    return unresolved


def read_kmsg(contains: str = "drbd") -> list[str] | None:
    """All kernel-log records still in the ring buffer that contain `contains`; None if unreadable.

    Needs root (or CAP_SYSLOG with kernel.dmesg_restrict=1).  Records that wrapped out of the
    buffer are gone: an old split brain may no longer be visible.
    """
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    found: list[str] = []
    try:
        while True:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:  # record overwritten while we read: skip to the next
                    continue
                return None
            line = rec.decode("utf-8", "replace").split("\n", 1)[0]
            if contains in line:
                found.append(line)
    finally:
        os.close(fd)
    return found
