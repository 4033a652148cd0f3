"""Guest side of the lab's control channel: runs argv lists sent over a virtio-serial port.

Runs in the VM as `python3 -I agent.py` (standard library only).  Requests and replies are
JSON lines carrying an `id`; there is no network listener: the port's host end is a Unix
socket in the host's root-only lab directory.  See lab.client for the protocol.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

PORT_NAME = "lab.ctl"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BG_LOG_DIR = "/tmp"  # the guest's tmpfs
_write_lock = threading.Lock()
_background: dict[int, subprocess.Popen[bytes]] = {}


def find_port(name: str = PORT_NAME) -> str:
    base = "/sys/class/virtio-ports"
    for _ in range(300):
        for entry in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            try:
                with open(os.path.join(base, entry, "name"), encoding="ascii") as f:
                    if f.read().strip() == name:
                        return f"/dev/{entry}"
            except OSError:
                continue
        time.sleep(0.1)
    raise SystemExit(f"agent: no virtio-serial port named {name}")


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {"PATH": PATH, "LC_ALL": "C", "HOME": "/root", "TERM": "dumb"}
    env.update(extra or {})
    return env


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def run(req: dict[str, Any]) -> dict[str, Any]:
    """One argv with a timeout; output through temporary files so daemons cannot hold a pipe."""
    argv = [str(a) for a in req["argv"]]
    started = time.monotonic()
    stdin = (req.get("input") or "").encode("utf-8", "surrogateescape")
    with tempfile.TemporaryFile() as inp, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        inp.write(stdin)
        inp.seek(0)
        try:
            proc = subprocess.Popen(argv, stdin=inp, stdout=out, stderr=err, env=_env(req.get("env")),
                                    cwd=req.get("cwd") or "/", start_new_session=True)
        except OSError as e:
            return {"rc": None, "error": f"cannot run {argv[0]}: {e}", "missing": True}
        timed_out = False
        try:
            proc.wait(timeout=float(req.get("timeout", 60)))
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.seek(0)
        err.seek(0)
        return {"rc": None if timed_out else proc.returncode, "stdout": _text(out.read()),
                "stderr": _text(err.read()), "timed_out": timed_out, "secs": round(time.monotonic() - started, 3)}


def start_background(req: dict[str, Any]) -> dict[str, Any]:
    """Start argv in its own session and return its PID at once; reaped on later requests."""
    log = open(os.path.join(BG_LOG_DIR, f"bg-{time.monotonic_ns()}.log"), "wb")  # noqa: SIM115 - owned by the child
    try:
        proc = subprocess.Popen([str(a) for a in req["argv"]], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, env=_env(req.get("env")), cwd=req.get("cwd") or "/",
                                start_new_session=True)
    except OSError as e:
        return {"rc": None, "error": f"cannot run {req['argv'][0]}: {e}", "missing": True}
    finally:
        log.close()
    _background[proc.pid] = proc
    return {"pid": proc.pid, "log": log.name}


def handle(fd: int, line: bytes) -> None:
    try:
        req = json.loads(line)
        rid = req.get("id")
    except ValueError:
        return
    for pid, proc in list(_background.items()):
        if proc.poll() is not None:
            _background.pop(pid, None)
    op = req.get("op")
    try:
        if op == "ping":
            with open("/proc/uptime", encoding="ascii") as f:
                reply: dict[str, Any] = {"pong": socket.gethostname(), "uptime": float(f.read().split()[0])}
        elif op == "exec" and req.get("background"):
            reply = start_background(req)
        elif op == "exec":
            reply = run(req)
        else:
            reply = {"error": f"unknown op {op!r}"}
    except Exception as e:  # noqa: BLE001 - the host must get an answer, whatever failed
        reply = {"error": f"{type(e).__name__}: {e}"}
    reply["id"] = rid
    data = json.dumps(reply).encode() + b"\n"
    with _write_lock:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]


def serve(path: str) -> None:
    """Read request lines; a read of 0 bytes means no host end is connected: wait and retry."""
    fd = os.open(path, os.O_RDWR)
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            buf = b""  # the client went away mid-line: drop its partial request
            time.sleep(0.05)
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            threading.Thread(target=handle, args=(fd, line), daemon=True).start()


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else find_port())
