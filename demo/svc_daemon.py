"""A tiny pidfile daemon standing in for a mail service, for the `commands` backend (no shell).

    svc_daemon.py start PIDFILE [--slow-stop]   spawn a detached daemon, write its pid, return
    svc_daemon.py stop PIDFILE                  SIGTERM the daemon and return at once
    svc_daemon.py status PIDFILE                exit 0 if the daemon runs, 3 if not (LSB)

With --slow-stop the daemon takes 1 s to exit after SIGTERM, so a caller that does not wait
for the status to change would see it still running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def _pid(pidfile: str) -> int | None:
    try:
        with open(pidfile) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _running(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return state not in ("Z", "X") and b"svc_daemon.py" in cmdline  # a zombie or a reused pid is not us


def _run(slow: bool) -> None:
    def term(_sig: int, _frame: object) -> None:
        if slow:
            time.sleep(1.0)
        sys.exit(0)

    signal.signal(signal.SIGTERM, term)
    while True:
        time.sleep(3600)


def main(argv: list[str]) -> int:
    cmd, pidfile = argv[0], argv[1]
    slow = "--slow-stop" in argv
    if cmd == "run":
        _run(slow)
    if cmd == "start":
        if _running(_pid(pidfile)):
            return 0
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "run", pidfile, *(["--slow-stop"] if slow else [])],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with open(pidfile + ".tmp", "w") as f:
            f.write(f"{child.pid}\n")
        os.rename(pidfile + ".tmp", pidfile)
        return 0
    if cmd == "stop":
        pid = _pid(pidfile)
        if _running(pid):
            os.kill(pid, signal.SIGTERM)  # type: ignore[arg-type]
        return 0
    if cmd == "status":
        return 0 if _running(_pid(pidfile)) else 3
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
