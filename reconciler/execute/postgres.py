"""Execute the PG_* actions on the local PostgreSQL; every binary runs as the data dir owner.

SQL goes as the superuser named like the data directory's owner, over the socket
advertised in postmaster.pid (the node's pg_ident/pg_hba set-up: docs/operating.md,
"PostgreSQL set-up").  Port and primary_conninfo are in the owned file (`pgconf`).
Each action returns what the tools printed (never a password: passfiles only).
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import psycopg

from reconciler import safefile
from reconciler.execute import pgconf
from reconciler.observe import pgparse
from reconciler.pgrun import Owner, PostgresError, connect, data_owner, pg_bin, postmaster, run_as_owner
from reconciler.spec.models import Postgres

STOP_TIMEOUT_S = 3600  # a fast shutdown is never escalated to immediate: wait long
START_TIMEOUT_S = 300
PROMOTE_WAIT_S = 60
COPY_TIMEOUT_S = 6 * 3600  # pg_basebackup, pg_rewind, single-user crash recovery
MARGIN_S = 30  # subprocess timeout beyond the tool's own -t

# pg_control states from which starting as a standby is safe; any other is a primary that
# stopped uncleanly and may hold WAL past the fork, and must be crash-recovered first.
_STANDBY_OK = ("shut down", "shut down in recovery", "in archive recovery")
# A standby's data directory: only promotion may make it writable (never a plain start,
# which would end recovery on the *same* timeline as the old primary).
_STANDBY_STATES = ("shut down in recovery", "in archive recovery")


def _controldata(cfg: Postgres, owner: Owner) -> pgparse.ControlData:
    proc = run_as_owner(owner, [pg_bin(cfg, "pg_controldata"), "-D", cfg.data_dir], 30)
    return pgparse.parse_controldata(proc.stdout)


def _stopped_owner(cfg: Postgres, what: str) -> Owner:
    if postmaster(cfg.data_dir) is not None:
        raise PostgresError(f"refusing to {what}: PostgreSQL is running in {cfg.data_dir}")
    return data_owner(cfg.data_dir)


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def _sql(cfg: Postgres, statement: str, host: str | None = None) -> list[tuple[Any, ...]]:
    """Run one statement without statement timeout (CHECKPOINT, pg_promote can be long)."""
    try:
        with connect(cfg, host, statement_timeout_ms=0) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []
    except psycopg.Error as e:
        raise PostgresError(f"{statement.split()[0]} failed: {e.diag.message_primary or type(e).__name__}") from None


def checkpoint(cfg: Postgres, host: str | None = None) -> str:
    _sql(cfg, "CHECKPOINT", host)
    return ""


def _pg_ctl(cfg: Postgres, owner: Owner, action: str, timeout: int, *extra: str) -> str:
    argv = [pg_bin(cfg, "pg_ctl"), action, "-D", cfg.data_dir, "-w", "-t", str(timeout), *extra]
    return _output(run_as_owner(owner, argv, timeout + MARGIN_S))


def stop(cfg: Postgres, host: str | None = None) -> str:
    """CHECKPOINT (so the shutdown checkpoint is short), then `pg_ctl stop -m fast`, waiting long.

    A fast shutdown streams every WAL record, the shutdown checkpoint included, to each
    connected standby before exiting; it is never escalated to immediate here.
    """
    if postmaster(cfg.data_dir) is None:
        return ""
    log = ""
    try:
        checkpoint(cfg, host)
    except PostgresError as e:  # only an optimisation: the shutdown checkpoint follows anyway
        log = f"CHECKPOINT skipped: {e}\n"
    owner = data_owner(cfg.data_dir)
    return log + _pg_ctl(cfg, owner, "stop", STOP_TIMEOUT_S, "-m", "fast")


def _start(cfg: Postgres, owner: Owner) -> str:
    log = os.path.join(cfg.data_dir, "postmaster.log")
    return _pg_ctl(cfg, owner, "start", START_TIMEOUT_S, "-l", log)


def crash_recover(cfg: Postgres) -> str:
    """Single-user crash recovery of a primary that stopped uncleanly; leaves it `shut down`.

    archive_mode=on with a failing archive_command keeps every WAL segment (pg_rewind
    may need them); no client can connect meanwhile (Patroni's ensure_clean_shutdown).
    """
    owner = _stopped_owner(cfg, "run crash recovery")
    state = _controldata(cfg, owner).cluster_state
    if state == "shut down":
        return ""
    if os.path.exists(os.path.join(cfg.data_dir, "standby.signal")):
        raise PostgresError("refusing crash recovery in single-user mode: standby.signal is present")
    argv = [
        pg_bin(cfg, "postgres"), "--single", "-D", cfg.data_dir,
        "-c", "archive_mode=on", "-c", "archive_command=false", "postgres",
    ]  # fmt: skip
    out = _output(run_as_owner(owner, argv, COPY_TIMEOUT_S))
    state = _controldata(cfg, owner).cluster_state
    if state != "shut down":
        raise PostgresError(f"after single-user crash recovery pg_control says {state!r}, not 'shut down'")
    return out


CLONE_APPLICATION_NAME = "reconciler-clone"


def clone(cfg: Postgres, source_host: str, source_port: int, node: str) -> str:
    """pg_basebackup of the source into the EMPTY data directory, then standby config.

    The directory must exist, be empty and be owned by the PostgreSQL user (its owner is
    who everything runs as); anything else is refused and left untouched.
    """
    d = cfg.data_dir
    if not os.path.isdir(d):
        raise PostgresError(f"refusing to clone: {d} does not exist (create it, owned by the PostgreSQL user)")
    if os.listdir(d):
        raise PostgresError(f"refusing to clone: {d} is not empty")
    owner = data_owner(d)
    with safefile.directory(d) as dfd:  # fchmod: a link put at `d` is not followed
        os.fchmod(dfd, 0o700)
    with pgconf.temp_passfile(cfg, owner) as passfile:
        # Not the node's name: pg_basebackup's WAL stream shows in the source's pg_stat_replication,
        # and under the node's name it would pass for that standby streaming (even `sync`), which
        # automatic failover would take for a synchronous candidate.
        conninfo = pgconf.source_conninfo(cfg, source_host, source_port, CLONE_APPLICATION_NAME, passfile)
        argv = [pg_bin(cfg, "pg_basebackup"), "-D", d, "-d", conninfo, "-X", "stream", "-c", "fast", "-w"]
        out = _output(run_as_owner(owner, argv, COPY_TIMEOUT_S))
    _drop_copied_socket_locks(d)
    pgconf.write_standby_signal(d, owner)
    pgconf.write_config(cfg, owner, (source_host, source_port), node)
    return out


def _drop_copied_socket_locks(data_dir: str, sockets_too: bool = False) -> None:
    """pg_basebackup and pg_rewind copy a socket's lock file when the source keeps its unix
    socket in the data directory; a copied lock names the *source's* postmaster and would
    stop this one from starting.  Before pg_rewind of a stopped (crashed) target, its own
    stale sockets go too: pg_rewind cannot open a socket file."""
    for name in os.listdir(data_dir):
        if name.startswith(".s.PGSQL.") and (sockets_too or name.endswith(".lock")):
            os.unlink(os.path.join(data_dir, name))


def rewind(cfg: Postgres, source_host: str, source_port: int, node: str) -> str:
    """pg_rewind the stopped target from the running source; then signal + owned config again.

    Discards whatever this node wrote after the fork.  pg_rewind (>= 13) runs crash
    recovery itself on an uncleanly stopped target.  It copies the source's config
    files, so every owned file is re-rendered afterwards.  The source must have
    checkpointed since its promotion (planner guard), or pg_rewind wrongly sees no fork.
    """
    owner = _stopped_owner(cfg, "pg_rewind")
    _drop_copied_socket_locks(cfg.data_dir, sockets_too=True)  # stale after a crash; pg_rewind trips on them
    with pgconf.temp_passfile(cfg, owner) as passfile:
        conninfo = pgconf.source_conninfo(cfg, source_host, source_port, node, passfile, dbname="postgres")
        argv = [pg_bin(cfg, "pg_rewind"), "-D", cfg.data_dir, f"--source-server={conninfo}"]
        out = _output(run_as_owner(owner, argv, COPY_TIMEOUT_S))
    _drop_copied_socket_locks(cfg.data_dir)
    pgconf.write_standby_signal(cfg.data_dir, owner)
    pgconf.write_config(cfg, owner, (source_host, source_port), node)
    return out


def start_standby(cfg: Postgres, source_host: str | None, source_port: int | None, node: str) -> str:
    """standby.signal FIRST, then the owned conninfo (none: an idle standby), then start.

    Refused on a primary that stopped uncleanly: it may hold WAL past the fork point and
    must be crash-recovered first.  A backup_label (left by
    pg_basebackup or pg_rewind) makes recovery start from the backup's checkpoint: allowed.
    """
    owner = _stopped_owner(cfg, "start as a standby")
    state = _controldata(cfg, owner).cluster_state
    from_backup = os.path.exists(os.path.join(cfg.data_dir, "backup_label"))  # fresh clone or rewind
    if state not in _STANDBY_OK and not from_backup:
        raise PostgresError(f"refusing to start as a standby: pg_control says {state!r} (crash-recover first)")
    pgconf.write_standby_signal(cfg.data_dir, owner)
    source = (source_host, source_port) if source_host and source_port else None
    pgconf.write_config(cfg, owner, source, node)
    return _start(cfg, owner)


def retarget(cfg: Postgres, source_host: str, source_port: int, node: str, host: str | None = None) -> str:
    """Rewrite the owned conninfo of a running standby and reload (PG13+: no restart)."""
    if postmaster(cfg.data_dir) is None:
        raise PostgresError("refusing to retarget: PostgreSQL is not running")
    pgconf.write_config(cfg, data_owner(cfg.data_dir), (source_host, source_port), node)
    _sql(cfg, "SELECT pg_reload_conf()", host)
    return ""


def start_primary(cfg: Postgres) -> str:
    """Start writable: a cleanly stopped primary, or one that crashed in place (PostgreSQL
    recovers it on start).  A standby's data directory becomes writable only by promotion."""
    owner = _stopped_owner(cfg, "start as primary")
    state = _controldata(cfg, owner).cluster_state
    if state in _STANDBY_STATES:
        raise PostgresError(f"refusing to start a standby data directory ({state!r}) as primary: promote it instead")
    pgconf.remove_standby_signal(cfg.data_dir)
    pgconf.write_config(cfg, owner, None, "", sync=None)
    return _start(cfg, owner)


def set_sync(cfg: Postgres, names: tuple[str, ...], host: str | None = None) -> str:
    """Make a running primary's commits wait for `names` (() for nobody): the owned file, then
    a reload; the next observation shows the live value (SHOW synchronous_standby_names)."""
    if postmaster(cfg.data_dir) is None:
        raise PostgresError("refusing to change synchronous replication: PostgreSQL is not running")
    pgconf.write_config(cfg, data_owner(cfg.data_dir), None, "", sync=names)
    _sql(cfg, "SELECT pg_reload_conf()", host)
    return ""


def promote(cfg: Postgres, host: str | None = None) -> str:
    """`pg_promote(true, 60)` then CHECKPOINT (pg_control's timeline, needed by pg_rewind).

    Refused while WAL replay is paused: the promotion would happen at an unknown later time.
    """
    q = "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END"
    rows = _sql(cfg, q, host)
    in_recovery, pause_state = rows[0]
    if in_recovery:
        if pause_state != "not paused":
            raise PostgresError(f"refusing to promote: WAL replay is {pause_state}; run pg_wal_replay_resume()")
        if not _sql(cfg, f"SELECT pg_promote(true, {PROMOTE_WAIT_S})", host)[0][0]:
            raise PostgresError(f"promotion did not finish within {PROMOTE_WAIT_S} s")
    checkpoint(cfg, host)
    return ""
