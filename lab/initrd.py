"""The guest's boot: pick a Debian kernel with drbd.ko, build a small initramfs (newc cpio).

The initramfs holds the static busybox, the modules needed to mount the host's root over
virtio-9p (read-only, with a tmpfs overlay on top) and two short sh scripts: `init` (mount,
switch_root) and `lab-init` (PID 1 afterwards: the node's persistent disk, network, host
name, the boot hook, then the agent forever).

The guest mounts fresh tmpfs on /tmp and /run, hiding the host's.  `init` therefore keeps
the 9p mount itself reachable at /.host in the new root (moved, not bound: a virtio-9p tag
mounts only once), and `lab-init` bind-mounts each `lab.keep` path under /tmp or /run (the
checkout, the venv: `Layout.guest_keep`) from there back at its own path, read-only, then
unmounts /.host so that nothing else of the host's /tmp and /run shows.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

BUSYBOX = "/bin/busybox"
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
KERNEL_ENV = "RECONCILER_LAB_KERNEL"

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
fail() { echo "lab-initrd: $*" >/dev/console; poweroff -f; }
for m in $(cat /modules.list); do insmod "/lib/m/$m" || fail "insmod $m"; done
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || fail "9p"
mount -t tmpfs -o mode=0755 tmpfs /rw && mkdir /rw/upper /rw/work || fail "tmpfs"
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || fail "overlay"
cp /lab-init /newroot/lab-init || fail "cp lab-init"
mkdir -p /newroot/.host && mount --move /lower /newroot/.host || fail "move host root"
for d in dev proc sys; do mount --move "/$d" "/newroot/$d" || fail "move $d"; done
exec switch_root /newroot /bin/busybox sh /lab-init
"""

LAB_INIT = r"""# PID 1 on the overlay root: set up, then run the agent in the foreground forever
# (the shell's waits also reap orphaned processes).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C HOME=/root
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1="*) echo "${w#*=}";; esac; done; }
mount -t tmpfs -o mode=0755 tmpfs /run; mount -t tmpfs -o mode=1777 tmpfs /tmp
# The checkout and the venv may live under the host's /tmp or /run, just hidden: show each
# again at its own path, read-only, from the host's root kept at /.host by init.
for p in $(arg lab.keep | tr , ' '); do
  case "$p" in /tmp/*|/run/*) ;; *) continue;; esac
  mkdir -p "$p" && mount --bind "/.host$p" "$p" || echo "lab: cannot show host $p" >/dev/console
done
umount /.host && rmdir /.host || echo "lab: cannot unmount /.host" >/dev/console
mkdir -p /run/lock; ln -s /proc/self/fd /dev/fd
for i in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${i%%:*}" "/dev/${i#*:}"; done
hostname "$(arg lab.host)"
modprobe -a virtio_net virtio_blk virtio_console ext4
rm -f /etc/drbd.d/*.res; rm -rf /var/lib/drbd/*
# The node's own disk (lab.persist=SERIAL:DIR,DIR...): ext4 made on first boot, each DIR
# bind-mounted from it (first filled with what the host root has there, cleaned above).
p=$(arg lab.persist); serial=${p%%:*}; dev=
for b in /sys/block/vd*; do [ "$(cat "$b/serial" 2>/dev/null)" = "$serial" ] && dev=/dev/${b##*/}; done
if [ -n "$serial" ] && [ -n "$dev" ]; then
  blkid "$dev" >/dev/null 2>&1 || mkfs.ext4 -q -L "$serial" "$dev" || echo "lab: mkfs $dev failed" >/dev/console
  mkdir -p /persist && mount -o noatime "$dev" /persist || echo "lab: cannot mount $dev" >/dev/console
  for d in $(echo "${p#*:}" | tr , ' '); do
    if [ ! -d "/persist$d" ]; then mkdir -p "/persist$d" "$d" && cp -a "$d/." "/persist$d/"; fi
    mkdir -p "$d" && mount --bind "/persist$d" "$d" || echo "lab: cannot keep $d" >/dev/console
  done
elif [ -n "$serial" ]; then echo "lab: no disk with serial $serial" >/dev/console; fi
ip link set lo up
ip addr add "$(arg lab.repl)" dev eth0 && ip link set eth0 up
ip addr add "$(arg lab.mgmt)" dev eth1 && ip link set eth1 up
# What systemd would start at boot (lab.boot=FILE: root's, executable), in the background.
b=$(arg lab.boot)
if [ -n "$b" ] && [ -x "$b" ] && [ "$(stat -c %u "$b")" = 0 ]; then
  echo "lab: $(hostname): running $b" >/dev/console; "$b" </dev/null >/dev/console 2>&1 &
fi
echo "lab: $(hostname) up, starting agent" >/dev/console
while :; do
  /usr/bin/python3 -I "$(arg lab.agent)" >/dev/console 2>&1
  echo "lab: agent exited $?, restarting" >/dev/console; sleep 1
done
"""


def _kver_key(kernel: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.findall(r"\d+|[^\d.\-+_]+", kernel))


def _module_paths(kernel: str) -> dict[str, str]:
    """module name -> path relative to /lib/modules/<kernel>, from modules.dep."""
    dep = Path("/lib/modules", kernel, "modules.dep")
    out = {}
    for line in dep.read_text().splitlines():
        path = line.split(":", 1)[0]
        out[os.path.basename(path).split(".ko")[0].replace("-", "_")] = path
    return out


def find_kernel() -> tuple[str, str]:
    """(kernel release, vmlinuz path) of the newest /boot kernel whose modules include drbd."""
    forced = os.environ.get(KERNEL_ENV)
    candidates = [forced] if forced else [str(p) for p in Path("/boot").glob("vmlinuz-*")]
    found = []
    for path in candidates:
        release = os.path.basename(path).removeprefix("vmlinuz-")
        try:
            if "drbd" in _module_paths(release):
                found.append((release, path))
        except OSError:
            continue
    if not found:
        raise FileNotFoundError(
            "no kernel with a drbd module under /boot and /lib/modules: "
            "apt-get install --no-install-recommends linux-image-amd64"
            + (f" (or fix {KERNEL_ENV}={forced})" if forced else "")
        )
    return max(found, key=lambda f: _kver_key(f[0]))


def module_order(kernel: str, wanted: tuple[str, ...] = MODULES) -> list[str]:
    """Relative .ko paths of `wanted` and their dependencies, dependencies first."""
    paths = _module_paths(kernel)
    deps: dict[str, list[str]] = {}
    for line in Path("/lib/modules", kernel, "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for d in deps.get(path, []):
            visit(d)
        order.append(path)

    for name in wanted:
        if name not in paths:
            raise FileNotFoundError(f"kernel {kernel} has no module {name}")
        visit(paths[name])
    return order


def _entry(name: str, mode: int, data: bytes = b"", ino: int = 0, rdev: tuple[int, int] = (0, 0)) -> bytes:
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def build(out: Path, kernel: str) -> int:
    """Write the initramfs for `kernel` to `out`; returns its size in bytes."""
    modules = module_order(kernel)
    for m in modules:
        if not m.endswith(".ko"):
            raise ValueError(f"compressed module {m}: busybox insmod needs plain .ko files")
    files: list[tuple[str, int, bytes, tuple[int, int]]] = [
        (d, stat.S_IFDIR | 0o755, b"", (0, 0)) for d in ("bin", "dev", "proc", "sys", "lib", "lib/m")
    ]
    files.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
    files.append(("bin/busybox", stat.S_IFREG | 0o755, Path(BUSYBOX).read_bytes(), (0, 0)))
    for m in modules:
        data = Path("/lib/modules", kernel, m).read_bytes()
        files.append((f"lib/m/{os.path.basename(m)}", stat.S_IFREG | 0o644, data, (0, 0)))
    names = "\n".join(os.path.basename(m) for m in modules) + "\n"
    files.append(("modules.list", stat.S_IFREG | 0o644, names.encode(), (0, 0)))
    files.append(("init", stat.S_IFREG | 0o755, INIT.encode(), (0, 0)))
    files.append(("lab-init", stat.S_IFREG | 0o644, LAB_INIT.encode(), (0, 0)))
    blob = b"".join(_entry(n, mode, data, i + 1, rdev) for i, (n, mode, data, rdev) in enumerate(files))
    blob += _entry("TRAILER!!!", 0)
    out.write_bytes(blob)
    return len(blob)
