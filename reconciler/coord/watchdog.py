"""The Linux watchdog device (/dev/watchdog): reset this machine unless fed in time.

Automatic failover arms it before this node becomes the holder and feeds it only after a
successful lease renewal, so that a node whose demotion hangs is reset before its lease can
expire on the server (see reconciler.spec.failover for the timing relations).

Linux's watchdog API (Documentation/watchdog/watchdog-api.rst): opening the device arms it with
the driver's current timeout; WDIOC_SETTIMEOUT sets another (the driver may round it: the value it
took is returned); any write or WDIOC_KEEPALIVE feeds it; writing the magic character 'V' just
before closing disarms it, unless the driver was built or loaded with nowayout (then only a reset
ends it, which `close` reports).  Only one process may hold the device open.
"""

from __future__ import annotations

import fcntl
import os
import struct

# _IOWR('W', 6, int), _IOR('W', 7, int), _IOR('W', 5, int), _IOR('W', 0, struct watchdog_info)
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_GETTIMEOUT = 0x80045707
WDIOC_KEEPALIVE = 0x80045705
WDIOC_GETSUPPORT = 0x80285700
WDIOF_MAGICCLOSE = 0x0100
WDIOF_SETTIMEOUT = 0x0080


class WatchdogError(Exception):
    pass


class Watchdog:
    """An armed watchdog.  `Watchdog(device, timeout)` opens (arms) it and sets the timeout."""

    def __init__(self, device: str, timeout: int) -> None:
        try:
            self.fd: int | None = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise WatchdogError(f"cannot open the watchdog {device}: {e.strerror}"
                                + (" (load a driver: modprobe softdog, or the board's)" if e.errno == 2 else "")) from None
        self.device = device
        try:
            self.identity, options = self._support()
            if not options & WDIOF_SETTIMEOUT:
                raise WatchdogError(f"the watchdog {device} ({self.identity}) cannot set its timeout")
            self.magic_close = bool(options & WDIOF_MAGICCLOSE)
            buf = bytearray(struct.pack("i", timeout))
            fcntl.ioctl(self.fd, WDIOC_SETTIMEOUT, buf, True)
            self.timeout = struct.unpack("i", buf)[0]
        except Exception:
            os.close(self.fd)  # no magic character: stays armed with its old timeout, as the kernel decides
            self.fd = None
            raise

    def _support(self) -> tuple[str, int]:
        assert self.fd is not None
        buf = bytearray(40)  # struct watchdog_info: u32 options, u32 firmware_version, u8 identity[32]
        fcntl.ioctl(self.fd, WDIOC_GETSUPPORT, buf, True)
        options, _fw = struct.unpack_from("II", buf)
        return bytes(buf[8:40]).split(b"\0", 1)[0].decode(errors="replace"), options

    def feed(self) -> None:
        if self.fd is None:
            raise WatchdogError("the watchdog is not open")
        fcntl.ioctl(self.fd, WDIOC_KEEPALIVE, bytearray(4), True)

    def disarm(self) -> bool:
        """Magic close: True if the driver promises to stop (it supports the magic character);
        False means it will still reset the machine at its timeout (nowayout)."""
        if self.fd is None:
            return True
        try:
            os.write(self.fd, b"V")
        finally:
            os.close(self.fd)
            self.fd = None
        return self.magic_close
