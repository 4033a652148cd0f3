"""Run one program by argv with a hard timeout: never a shell, never a TTY.

Shared by the DRBD, mount and service readers and executors.  Output goes to temporary
files, not pipes, so a start command that leaves a daemon holding stdout cannot make us
wait for the daemon; on timeout the whole process group is killed (drbdadm forks
drbdsetup-84, which a plain kill of drbdadm would leave running).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SYS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class CmdResult:
    argv: tuple[str, ...]
    rc: int | None  # None when the program timed out or could not be started
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    missing: bool = False  # the program does not exist / is not executable

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def describe(self) -> str:
        """One line for error messages: what ran and how it ended."""
        cmd = " ".join(self.argv)
        if self.missing:
            return f"{cmd}: program not found"
        if self.timed_out:
            return f"{cmd}: timed out"
        tail = self.stderr.strip().splitlines()[-3:]
        return f"{cmd}: exit {self.rc}" + (": " + " / ".join(tail) if tail else "")


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    path = env.get("PATH")
    env["PATH"] = f"{path}:{SYS_PATH}" if path else SYS_PATH
    env.update(extra or {})
    return env


def run(
    argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None, merge_stderr: bool = False
) -> CmdResult:
    """Run `argv` (a list, no shell), stdin from /dev/null, LC_ALL=C; kill its group on timeout.

    `merge_stderr` sends stderr into stdout, in order (fuser -v splits one table across both).
    """
    args = tuple(argv)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=out if merge_stderr else err,
                env=_env(env), start_new_session=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError):
            return CmdResult(args, None, missing=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return CmdResult(args, None if timed_out else proc.returncode, stdout, stderr, timed_out=timed_out)
