"""Run PostgreSQL binaries as the data directory's owner, and connect as its superuser.

PostgreSQL refuses to run as root and the agent runs as root, so every binary runs in a
child with the owner's uid/gid (argv list, clean C-locale environment, timeout), and SQL
goes as the owner-named superuser over the unix socket the running postmaster advertises
in postmaster.pid (pg_hba `peer map=...`, see `reconciler.execute.postgres`).  Shared by
`observe.postgres` and `execute.postgres`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
from dataclasses import dataclass

import psycopg

from reconciler import safefile
from reconciler.spec.models import Postgres

# Files this tool owns inside the data directory (see reconciler.execute.pgconf).
OWNED_CONF = "reconciler.conf"  # included last from postgresql.conf
PASSFILE = "reconciler.pgpass"  # replication password for the walreceiver, mode 0600
STANDBY_SIGNAL = "standby.signal"
CONNECT_TIMEOUT_S = 5
READ_STATEMENT_TIMEOUT_MS = 10_000


class PostgresError(RuntimeError):
    """A PostgreSQL command or statement failed; the message never holds a password."""


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int
    name: str
    home: str


def data_owner(data_dir: str) -> Owner:
    """The OS user owning `data_dir`: PostgreSQL runs as it, and the superuser has its name."""
    try:
        st = os.stat(data_dir)
    except FileNotFoundError:
        raise PostgresError(f"{data_dir} does not exist") from None
    if st.st_uid == 0:
        raise PostgresError(f"{data_dir} is owned by root: PostgreSQL needs its own user to run as")
    pw = pwd.getpwuid(st.st_uid)
    return Owner(st.st_uid, pw.pw_gid, pw.pw_name, pw.pw_dir)


def pg_bin(cfg: Postgres, name: str) -> str:
    return os.path.join(cfg.bin_dir, name)


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def run_as_owner(
    owner: Owner,
    argv: list[str],
    timeout: float,
    *,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` as `owner` in "/", stdin /dev/null, clean C-locale env; output captured.

    The child gets its own session; on timeout that whole group is killed (pg_rewind runs
    a single-user postgres of its own).  pg_ctl puts the postmaster in a session of its own,
    so a started server is never part of that group.
    """
    child_env = {"PATH": "/usr/bin:/bin", "LANG": "C", "LC_ALL": "C", "HOME": owner.home, **(env or {})}
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
        env=child_env,
        user=owner.uid,
        group=owner.gid,
        extra_groups=[],
        umask=0o077,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise PostgresError(f"{os.path.basename(argv[0])} did not finish within {timeout:g} s (killed)") from None
    if check and proc.returncode != 0:
        raise PostgresError(f"{os.path.basename(argv[0])} exited {proc.returncode}: {_tail(out + chr(10) + err)}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@dataclass(frozen=True)
class Postmaster:
    """A live postmaster (or single-user backend) as its postmaster.pid describes it."""

    pid: int
    port: int | None
    socket_dir: str | None  # first unix_socket_directories entry; None without sockets
    status: str | None  # starting, stopping, ready, standby; None for single-user mode


def parse_postmaster_pid(text: str) -> Postmaster | None:
    """postmaster.pid lines: pid, data dir, start time, port, socket dir, listen, shmem, status."""
    lines = text.split("\n")
    try:
        pid = abs(int(lines[0]))  # negative in single-user mode
    except (ValueError, IndexError):
        return None

    def field(i: int) -> str | None:
        return (lines[i].strip() if len(lines) > i else "") or None

    port = field(3)
    return Postmaster(pid, int(port) if port and port.isdigit() else None, field(4), field(7))


def postmaster(data_dir: str) -> Postmaster | None:
    """The postmaster of `data_dir` if one is alive: its pid exists and has `data_dir` as cwd.

    The cwd check (PostgreSQL chdirs to its data directory) makes a stale postmaster.pid
    whose pid was reused by another process after a crash or reboot read as "not running".
    """
    try:
        text = safefile.read_text(os.path.join(data_dir, "postmaster.pid"), cap=64 << 10)
    except NotADirectoryError:
        return None
    if text is None:
        return None
    pm = parse_postmaster_pid(text)
    if pm is None:
        return None
    try:
        cwd = os.readlink(f"/proc/{pm.pid}/cwd")
    except OSError:
        return None
    return pm if os.path.realpath(cwd) == os.path.realpath(data_dir) else None


def connect(
    cfg: Postgres,
    host: str | None = None,
    *,
    statement_timeout_ms: int = READ_STATEMENT_TIMEOUT_MS,
    replication: bool = False,
) -> psycopg.Connection:
    """Autocommit connection as the owner-named superuser to the running server.

    `host` defaults to the socket directory and port the postmaster advertises in
    postmaster.pid (as pg_ctl does); peer authentication maps root to that user.
    """
    pm = postmaster(cfg.data_dir)
    if pm is None:
        raise PostgresError(f"PostgreSQL is not running in {cfg.data_dir}")
    sock = pm.socket_dir
    if sock and not os.path.isabs(sock):  # relative to the data directory, as the postmaster sees it
        sock = os.path.join(cfg.data_dir, sock)
    host = host or sock or "localhost"
    port = pm.port or cfg.port
    user = data_owner(cfg.data_dir).name
    kwargs: dict[str, object] = {}
    if replication:
        kwargs["replication"] = "true"
    else:
        kwargs["options"] = f"-c statement_timeout={statement_timeout_ms}"
    try:
        return psycopg.connect(
            host=host,
            port=port,
            user=user,
            dbname="postgres",
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name="reconciler",
            autocommit=True,
            **kwargs,  # type: ignore[arg-type]
        )
    except psycopg.Error as e:
        raise PostgresError(f"cannot connect to PostgreSQL on {host} port {port}: {_tail(str(e), 2)}") from None
