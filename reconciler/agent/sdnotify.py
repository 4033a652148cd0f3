"""systemd's notify protocol, without libsystemd: datagrams to $NOTIFY_SOCKET.

READY=1 once (after the first full observation), STATUS=<one line> when it changes,
WATCHDOG=1 every half of WATCHDOG_USEC, STOPPING=1 on the way out.  Without
NOTIFY_SOCKET (not under systemd, or Type=simple) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import threading
import time


def _address(raw: str) -> str | None:
    if raw.startswith("@"):
        return "\0" + raw[1:]  # abstract namespace
    return raw if raw.startswith("/") else None


def watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6


class Notifier:
    def __init__(self, env: dict[str, str] | os._Environ[str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = _address(raw) if raw else None
        self.interval = watchdog_interval(env) if self.address else None
        self._lock = threading.Lock()
        self._ready = False
        self._status: str | None = None
        self._last_ping = 0.0

    def send(self, *fields: str) -> bool:
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError:
            return False  # systemd gone (or not listening): never the agent's problem

    def ready(self, status: str | None = None) -> None:
        with self._lock:
            if self._ready:
                return
            self._ready = True
            self._status = status
            self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        text = " ".join(text.split())[:200]
        with self._lock:
            if text == self._status:
                return
            self._status = text
        self.send(f"STATUS={text}")

    def ping(self, force: bool = False) -> None:
        """WATCHDOG=1 if half the watchdog interval passed since the last one."""
        if self.interval is None:
            return
        now = time.monotonic()
        if force or now - self._last_ping >= self.interval:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def next_ping_in(self) -> float | None:
        if self.interval is None:
            return None
        return max(0.0, self._last_ping + self.interval - time.monotonic())

    def stopping(self) -> None:
        self.send("STOPPING=1")
