"""Host side of the control channel: one JSON request per connection to a VM's ctl.sock.

qemu serves the socket (one client at a time; others wait in the backlog) and relays it
to the guest's virtio-serial port, where lab.agent answers.  Replies carry the
request's `id`, so a late reply meant for a client that gave up is skipped, not misread.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARGIN_S = 15.0  # added to the command's own timeout: the guest kills it first


class LabError(Exception):
    """The lab could not do what was asked; the message says what and where."""


@dataclass(frozen=True)
class ExecResult:
    node: str
    argv: tuple[str, ...]
    rc: int | None  # None: timed out, or could not be started (see error)
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    secs: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def check(self) -> ExecResult:
        if not self.ok:
            raise LabError(f"{self.node}: {' '.join(self.argv)}: "
                           f"{self.error or ('timed out' if self.timed_out else f'exit {self.rc}')}"
                           + (f": {self.stderr.strip()[-500:]}" if self.stderr.strip() else ""))
        return self


def request(sock_path: Path, req: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one request, return the reply with the same id; LabError on timeout or EOF."""
    rid = uuid.uuid4().hex
    data = json.dumps({**req, "id": rid}).encode() + b"\n"
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(sock_path))
            s.sendall(data)
        except OSError as e:
            raise LabError(f"cannot reach the lab agent at {sock_path}: {e}") from e
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError(f"no reply from the lab agent at {sock_path} within {timeout:.0f} s")
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise LabError(f"the lab agent at {sock_path} closed the connection")
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    reply = json.loads(line)
                except ValueError:
                    continue
                if reply.get("id") == rid:
                    return dict(reply)


def ping(sock_path: Path, timeout: float = 5.0) -> dict[str, Any]:
    return request(sock_path, {"op": "ping"}, timeout)


def exec_argv(node: str, sock_path: Path, argv: list[str], timeout: float = 60.0,
              input_text: str | None = None, env: dict[str, str] | None = None) -> ExecResult:
    """Run argv in the VM (no shell) and wait for it; the guest kills it after `timeout`."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings")
    req = {"op": "exec", "argv": argv, "timeout": timeout, "input": input_text, "env": env}
    r = request(sock_path, req, timeout + MARGIN_S)
    return ExecResult(node, tuple(argv), r.get("rc"), r.get("stdout", ""), r.get("stderr", ""),
                      bool(r.get("timed_out")), float(r.get("secs", 0.0)), r.get("error", ""))


def spawn(sock_path: Path, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Start argv in the background in the VM; its PID there (stop it with exec kill PID)."""
    r = request(sock_path, {"op": "exec", "argv": argv, "background": True, "env": env}, MARGIN_S)
    if "pid" not in r:
        raise LabError(f"cannot start {argv[0]} in the VM: {r.get('error', r)}")
    return int(r["pid"])
