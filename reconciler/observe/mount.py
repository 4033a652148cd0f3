"""Mounts as the kernel reports them in /proc/self/mountinfo.

`parse_mountinfo` is pure (it decodes the kernel's octal escapes such as `\\040` for a
space); `read_mounts` reads the file and answers only for the mount points asked about.
The DRBD observer also uses the parser to find mounts of a device by major:minor.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from reconciler.model import MountObs

MOUNTINFO = "/proc/self/mountinfo"

_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """Undo the kernel's mangling of space, tab, newline and backslash (`\\040` -> ' ')."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class MountEntry:
    """One line of mountinfo (proc(5)); paths are unescaped."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mountpoint: str
    mount_options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    def options(self) -> tuple[str, ...]:
        """Per-mount then per-superblock options, first occurrence kept."""
        return tuple(dict.fromkeys(self.mount_options + self.super_options))


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse mountinfo text into entries, in file order (later entries are mounted on top)."""
    entries: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 10 or "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        major, _, minor = fields[2].partition(":")
        entries.append(
            MountEntry(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                major=int(major),
                minor=int(minor),
                root=unescape(fields[3]),
                mountpoint=unescape(fields[4]),
                mount_options=tuple(fields[5].split(",")),
                fstype=unescape(fields[sep + 1]),
                source=unescape(fields[sep + 2]),
                super_options=tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else (),
            )
        )
    return entries


def mounts_at(
    entries: Iterable[MountEntry],
    mountpoints: Iterable[str],
    resolve: Callable[[str], str] = os.path.normpath,
) -> dict[str, MountObs]:
    """Map each requested mount point that has something mounted to the topmost mount.

    `resolve` turns a requested path into the kernel's spelling (read_mounts passes
    realpath, since the kernel reports mount points with symlinks resolved).
    """
    wanted = {resolve(m): m for m in mountpoints}
    found: dict[str, MountObs] = {}
    for e in entries:
        key = wanted.get(e.mountpoint)
        if key is not None:  # later lines are stacked on top of earlier ones: last one wins
            found[key] = MountObs(source=e.source, fstype=e.fstype, options=e.options())
    return found


def read_mountinfo(path: str = MOUNTINFO) -> list[MountEntry]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def read_mounts(mountpoints: Iterable[str]) -> dict[str, MountObs]:
    """What is mounted on each of `mountpoints` (absent key: nothing mounted there)."""
    return mounts_at(read_mountinfo(), mountpoints, resolve=os.path.realpath)
