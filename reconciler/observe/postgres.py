"""Read one node's PostgreSQL into a `PostgresObs`: SQL when running, pg_control when not.

Always: pg_controldata (cluster state, checkpoint, system id, rewind possible), signal
files, the conninfo in the owned config file, this timeline's history file.  Running:
the SQL positions; on a standby the *replay* timeline comes from IDENTIFY_SYSTEM on a
`replication=true` connection to itself (Patroni's method; needs a `local replication`
pg_hba line).  Stopped after a clean shutdown as primary: the end of the shutdown
checkpoint record via pg_waldump.  Interpretation is in `observe.pgparse`.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg

from reconciler import safefile
from reconciler.model import PostgresObs, TimelineSwitch, WalReceiverObs
from reconciler.observe import pgparse
from reconciler.pgrun import (
    OWNED_CONF,
    STANDBY_SIGNAL,
    Owner,
    PostgresError,
    Postmaster,
    connect,
    data_owner,
    pg_bin,
    postmaster,
    run_as_owner,
)
from reconciler.spec.models import Postgres

TOOL_TIMEOUT_S = 30

_SQL_COMMON = "SELECT pg_is_in_recovery(), (pg_control_checkpoint()).timeline_id"
_SQL_PRIMARY = (
    "SELECT pg_current_wal_flush_lsn()::text,"
    " ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
)
_SQL_STANDBY = (
    "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,"
    " pg_get_wal_replay_pause_state() <> 'not paused'"
)
_SQL_WALRECEIVER = "SELECT status, sender_host, sender_port, received_tli FROM pg_stat_wal_receiver"
_SQL_REPLICATION = (
    "SELECT application_name, state, sync_state, flush_lsn::text FROM pg_stat_replication ORDER BY application_name"
)


def read_postgres(cfg: Postgres, host: str | None = None) -> PostgresObs:
    """Observe the PostgreSQL of `cfg.data_dir`.

    `host` overrides where SQL connects (a socket directory or an address); by default
    the socket directory and port the running postmaster wrote into postmaster.pid.
    Raises PostgresError when a server that says it accepts connections refuses ours.
    """
    d = cfg.data_dir
    if not os.path.isdir(d):
        return PostgresObs(running=False)
    if not os.listdir(d):
        return PostgresObs(running=False, data_dir_empty=True)
    owner = data_owner(d)
    fields: dict[str, Any] = _read_files(d)
    cd = _read_controldata(cfg, owner)
    fields.update(
        cluster_state=cd.cluster_state,
        checkpoint_lsn=cd.checkpoint_lsn,
        checkpoint_timeline=cd.checkpoint_timeline,
        system_identifier=cd.system_identifier,
        rewind_possible=cd.rewind_possible,
    )
    pm = postmaster(d)
    if pm is not None:
        fields.update(_read_sql(cfg, host, pm))
    elif cd.cluster_state == "shut down":
        fields["checkpoint_end_lsn"] = _read_checkpoint_end(cfg, owner, cd)
    fields["history"] = read_history(d, fields.get("timeline") or cd.checkpoint_timeline)
    return PostgresObs(running=pm is not None, **fields)


def _read_files(data_dir: str) -> dict[str, Any]:
    """standby.signal and the primary_conninfo host/port of the owned config file."""
    out: dict[str, Any] = {"standby_signal": os.path.exists(os.path.join(data_dir, STANDBY_SIGNAL))}
    try:
        text = safefile.read_text(os.path.join(data_dir, OWNED_CONF))
        if text is None:
            return out
        conninfo = pgparse.parse_guc_file(text).get("primary_conninfo", "")
        params = pgparse.parse_conninfo(conninfo)
    except ValueError:
        return out
    port = params.get("port", "")
    out["conninfo_host"] = params.get("host") or None
    out["conninfo_port"] = int(port) if port.isdigit() else None
    return out


def _read_controldata(cfg: Postgres, owner: Owner) -> pgparse.ControlData:
    if not os.path.exists(os.path.join(cfg.data_dir, "global", "pg_control")):
        return pgparse.ControlData()
    proc = run_as_owner(owner, [pg_bin(cfg, "pg_controldata"), "-D", cfg.data_dir], TOOL_TIMEOUT_S)
    return pgparse.parse_controldata(proc.stdout)


def _read_checkpoint_end(cfg: Postgres, owner: Owner, cd: pgparse.ControlData) -> str | None:
    """End of the shutdown checkpoint record: the 2nd record asked for must be unreadable."""
    if cd.checkpoint_lsn is None or cd.checkpoint_timeline is None:
        return None
    argv = [
        pg_bin(cfg, "pg_waldump"),
        "-p", os.path.join(cfg.data_dir, "pg_wal"),
        "-t", str(cd.checkpoint_timeline),
        "-s", cd.checkpoint_lsn,
        "-n", "2",
    ]  # fmt: skip
    proc = run_as_owner(owner, argv, TOOL_TIMEOUT_S, check=False)
    return pgparse.parse_waldump_checkpoint_end(
        proc.stdout, proc.stderr, cd.wal_block_size, cd.wal_segment_size, cd.max_align
    )


def read_history(data_dir: str, timeline: int | None) -> tuple[TimelineSwitch, ...]:
    """History of `timeline` from `pg_wal/<TLI>.history` (timeline 1 has none).

    The file of this server's own timeline, not merely the newest one in pg_wal: a
    standby that fails to follow a forked primary has the primary's newer file there too.
    """
    if timeline is None or timeline <= 1:
        return ()
    text = safefile.read_text(os.path.join(data_dir, "pg_wal", f"{timeline:08X}.history"), cap=16 << 20)
    return () if text is None else pgparse.parse_history(text)


def _read_sql(cfg: Postgres, host: str | None, pm: Postmaster) -> dict[str, Any]:
    """Live positions; {} while the server is starting or stopping and refuses connections."""
    try:
        conn = connect(cfg, host)
    except PostgresError:
        if pm.status in ("ready", "standby"):
            raise
        return {}
    try:
        with conn:
            out = _query_positions(conn)
    except psycopg.Error as e:
        raise PostgresError(f"reading PostgreSQL state failed: {e.diag.message_primary or type(e).__name__}") from None
    if out.get("in_recovery"):
        out["timeline"] = replay_timeline(cfg, host)
    return out


def _query_positions(conn: psycopg.Connection) -> dict[str, Any]:
    in_recovery, control_tli = conn.execute(_SQL_COMMON).fetchone() or (None, None)
    out: dict[str, Any] = {"in_recovery": in_recovery, "control_timeline": control_tli}
    if in_recovery is False:
        out["current_lsn"], out["timeline"] = conn.execute(_SQL_PRIMARY).fetchone() or (None, None)
        out.update(_replication(conn))
        return out
    rcv, rpl, paused = conn.execute(_SQL_STANDBY).fetchone() or (None, None, None)
    out.update(receive_lsn=rcv, replay_lsn=rpl, replay_paused=paused)
    row = conn.execute(_SQL_WALRECEIVER).fetchone()
    if row is not None:
        out["wal_receiver"] = WalReceiverObs(status=row[0], sender_host=row[1], sender_port=row[2], received_tli=row[3])
    return out


def _replication(conn: psycopg.Connection) -> dict[str, Any]:
    """A primary's synchronous replication: the standbys commits wait for (the live value of
    synchronous_standby_names), those pg_stat_replication shows streaming, and of those the
    ones in sync now (`sync`, or `quorum` with ANY), with how far each has flushed."""
    row = conn.execute("SHOW synchronous_standby_names").fetchone()
    rows = conn.execute(_SQL_REPLICATION).fetchall()
    streaming = tuple(r[0] for r in rows if r[1] == "streaming")
    return {"sync_names": pgparse.parse_sync_names(str(row[0]) if row else ""), "streaming_standbys": streaming,
            "sync_standbys": tuple(r[0] for r in rows if r[1] == "streaming" and r[2] in ("sync", "quorum")),
            "standby_flush": {str(r[0]): str(r[3]) for r in rows if r[3] is not None}}


def replay_timeline(cfg: Postgres, host: str | None = None) -> int:
    """A standby's replay timeline: IDENTIFY_SYSTEM (column 2) on a replication connection to itself.

    `pg_control_checkpoint()` lags (last restartpoint) and `received_tli` exists only
    while a walreceiver runs; the walsender reports the timeline being replayed.
    """
    try:
        with connect(cfg, host, replication=True) as conn:
            row = conn.execute("IDENTIFY_SYSTEM").fetchone()
    except psycopg.Error as e:
        raise PostgresError(f"IDENTIFY_SYSTEM failed: {e.diag.message_primary or type(e).__name__}") from None
    if row is None:
        raise PostgresError("IDENTIFY_SYSTEM returned no row")
    return int(row[1])
