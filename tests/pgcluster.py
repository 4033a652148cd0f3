"""Throwaway PostgreSQL 15 clusters for tests: a primary from initdb, standbys via `clone`.

Everything lives under one temp dir (0755 so the `postgres` user reaches it): data dirs
owned by `postgres`, one unix-socket dir, a root-only password file.  The `pg_lab`
fixture stops only the postmasters started here, kills only processes whose cwd lies
inside that temp dir, and removes it, even when the test failed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from reconciler.execute import postgres as pgx
from reconciler.model import PostgresObs
from reconciler.observe.postgres import read_postgres
from reconciler.pgrun import PostgresError, data_owner, pg_bin, postmaster, run_as_owner
from reconciler.spec.models import Postgres
from tests.conftest import PG_BIN, need_postgres

OS_USER = "postgres"
REPL_USER = "replicator"

HBA = """\
local  all          postgres    peer map=reconciler
local  replication  postgres    peer map=reconciler
host   replication  replicator  127.0.0.1/32  scram-sha-256
host   postgres     replicator  127.0.0.1/32  scram-sha-256
"""
# Node-independent settings only: pg_basebackup and pg_rewind copy postgresql.conf.
BASE_CONF = """
listen_addresses = '127.0.0.1'
unix_socket_directories = '{sock}'
wal_keep_size = '256MB'
wal_retrieve_retry_interval = '1s'
log_line_prefix = '%m [%p] '
"""
IDENT = "reconciler  root      postgres\nreconciler  postgres  postgres\n"
REWIND_GRANTS = (
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `pred` every 20 ms until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Node:
    name: str
    cfg: Postgres

    def connect(self, **kw: Any) -> psycopg.Connection:
        pm = postmaster(self.cfg.data_dir)
        assert pm is not None, f"{self.name} is not running"
        return psycopg.connect(
            host=pm.socket_dir, port=self.cfg.port, user=OS_USER, dbname="postgres", autocommit=True, **kw
        )

    def sql(self, statement: str | sql.Composed, params: Any = None) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def observe(self) -> PostgresObs:
        return read_postgres(self.cfg)


class PgLab:
    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="rcpg-")
        os.chmod(self.root, 0o755)
        pw = pwd.getpwnam(OS_USER)
        self.sock = os.path.join(self.root, "sock")
        os.mkdir(self.sock, 0o700)
        os.chown(self.sock, pw.pw_uid, pw.pw_gid)
        self.password = "pw-" + secrets.token_hex(12)
        self.password_file = os.path.join(self.root, "replication.password")
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password + "\n")
        self.nodes: list[Node] = []

    def new_node(self, name: str) -> Node:
        """An empty data directory owned by postgres, and a free port."""
        d = os.path.join(self.root, name)
        os.mkdir(d, 0o700)
        pw = pwd.getpwnam(OS_USER)
        os.chown(d, pw.pw_uid, pw.pw_gid)
        cfg = Postgres(
            data_dir=d, bin_dir=PG_BIN, port=free_port(), replication_user=REPL_USER, password_file=self.password_file
        )
        node = Node(name, cfg)
        self.nodes.append(node)
        return node

    def init_primary(self, name: str = "a") -> Node:
        node = self.new_node(name)
        d, owner = node.cfg.data_dir, data_owner(node.cfg.data_dir)
        argv = [pg_bin(node.cfg, "initdb"), "-D", d, "-U", OS_USER, "--data-checksums", "--auth-local=peer",
                "--auth-host=scram-sha-256", "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C"]  # fmt: skip
        run_as_owner(owner, argv, 120)
        with open(os.path.join(d, "postgresql.conf"), "a") as f:
            f.write(BASE_CONF.format(sock=self.sock))
        for fname, text in (("pg_hba.conf", HBA), ("pg_ident.conf", IDENT)):
            with open(os.path.join(d, fname), "w") as f:
                f.write(text)
        pgx.start_primary(node.cfg)
        create = sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}")
        node.sql(create.format(sql.Identifier(REPL_USER), sql.Literal(self.password)))
        for fn in REWIND_GRANTS:
            node.sql(f"GRANT EXECUTE ON FUNCTION {fn} TO {REPL_USER}")
        return node

    def add_standby(self, name: str, source: Node) -> Node:
        """Clone `source` with the driver, start it, wait until it streams."""
        node = self.new_node(name)
        pgx.clone(node.cfg, "127.0.0.1", source.cfg.port, name)
        pgx.start_standby(node.cfg, "127.0.0.1", source.cfg.port, name)
        wait_until_streaming(node)
        return node

    def close(self) -> None:
        """Stop what this lab started (immediate: teardown only), then remove its temp dir."""
        try:
            for node in self.nodes:
                self._halt(node)
        finally:
            kill_processes_under(self.root)
            shutil.rmtree(self.root, ignore_errors=True)

    def _halt(self, node: Node) -> None:
        pm = postmaster(node.cfg.data_dir)
        if pm is None:
            return
        argv = [pg_bin(node.cfg, "pg_ctl"), "stop", "-D", node.cfg.data_dir, "-m", "immediate", "-w", "-t", "30"]
        with contextlib.suppress(PostgresError, OSError):
            run_as_owner(data_owner(node.cfg.data_dir), argv, 40, check=False)
        if postmaster(node.cfg.data_dir) is not None:
            os.kill(pm.pid, signal.SIGKILL)


def processes_under(root: str) -> list[int]:
    """Pids whose cwd is inside `root`: postmasters and backends of the lab's clusters."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if cwd == root or cwd.startswith(root + "/"):
                out.append(int(entry))
    return out


def kill_processes_under(root: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (pids := processes_under(root)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def wait_until_streaming(node: Node, timeline: int | None = None, timeout: float = 30.0) -> PostgresObs:
    """Wait for `node`'s walreceiver to stream and, if given, to receive and replay `timeline`."""

    def ok() -> PostgresObs | None:
        o = node.observe()
        w = o.wal_receiver
        on_tli = timeline is None or (w is not None and w.received_tli == o.timeline == timeline)
        good = w is not None and w.status == "streaming" and on_tli
        return o if good else None

    obs: PostgresObs = wait_for(ok, timeout, f"{node.name} streaming")
    return obs


@pytest.fixture
def pg_lab() -> Iterator[PgLab]:
    need_postgres()
    lab = PgLab()
    try:
        yield lab
    finally:
        lab.close()
