"""Test helpers: real git repositories in temp dirs, and a minimal spec for in-process agents."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from reconciler.model import NodeObservation

MINIMAL = """cluster: t
nodes:
  mx1: {{address: 127.0.0.1}}
  mx2: {{address: 127.0.0.2}}
primary: {primary}
agent:
  drift_check_interval_s: 5
  peer_port: {port}
  peer_secret_file: {secret}
  metrics: {metrics}
"""


def git(repo: str, *argv: str) -> str:
    r = subprocess.run(["git", "-C", repo, "-c", "user.name=test", "-c", "user.email=test@example.invalid",
                        "-c", "commit.gpgsign=false", *argv], capture_output=True, text=True, timeout=30, check=True)
    return r.stdout.strip()


def init_repo(repo: str) -> None:
    os.makedirs(repo, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")


def commit_file(repo: str, name: str, text: str, message: str = "edit") -> str:
    """Write `name`, commit it, return the new commit id."""
    write(os.path.join(repo, name), text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def secret_file(d: str) -> str:
    path = os.path.join(d, "peer.secret")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("0123456789abcdef" * 4 + "\n")
    return path


def minimal_spec(primary: str = "mx1", port: int = 7170, secret: str = "/nonexistent", metrics: bool = False) -> str:
    return MINIMAL.format(primary=primary, port=port, secret=secret, metrics=str(metrics).lower())


def bare_observe(spec, node: str) -> NodeObservation:
    """The minimal spec manages nothing: an empty observation is a converged one."""
    return NodeObservation(node=node)


@contextmanager
def running(agent) -> Iterator[threading.Thread]:
    """Run `agent.run()` in a thread; always stop it and wait for it."""
    t = threading.Thread(target=agent.run, name="agent-under-test", daemon=True)
    t.start()
    try:
        yield t
    finally:
        agent.stopping.set()
        agent.wake.set()
        t.join(10)
        assert not t.is_alive(), "the agent did not stop"
