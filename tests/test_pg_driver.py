"""PostgreSQL driver on real PostgreSQL 15: observe, switchover, rejoin, rewind, crash recovery.

Clusters come from `tests.pgcluster.pg_lab` (temp dirs, free ports, torn down even on
failure).  The switchover is the lossless one (CHECKPOINT, fast stop, promote after the shutdown checkpoint arrived), with a writer inserting rows, and checks
that every acknowledged insert survives.  Run with -s to see the measured step timings.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from reconciler.execute import postgres as pgx
from reconciler.model import TimelineSwitch, lsn_to_int
from reconciler.pgrun import PostgresError, data_owner, pg_bin, postmaster, run_as_owner
from reconciler.plan import pg_position
from tests import pgcluster
from tests.pgcluster import Node, PgLab, processes_under, wait_for, wait_until_streaming

pg_lab = pgcluster.pg_lab  # the fixture, made visible to pytest in this module

LOCAL = "127.0.0.1"


class Writer(threading.Thread):
    """Inserts rows one by one (autocommit); `acked` holds every id the server confirmed."""

    def __init__(self, node: Node) -> None:
        super().__init__(daemon=True)
        self.conn = node.connect()
        self.acked: list[int] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                row = self.conn.execute("INSERT INTO t(v) VALUES (1) RETURNING id").fetchone()
                assert row is not None
                self.acked.append(row[0])
        except psycopg.Error:
            pass  # the server went away: everything acknowledged so far must survive
        finally:
            self.conn.close()


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    timings[name] = time.monotonic() - t0


def ids(node: Node) -> set[int]:
    return {r[0] for r in node.sql("SELECT id FROM t")}


def test_observe_primary_and_standby(pg_lab: PgLab) -> None:
    a = pg_lab.init_primary("a")
    b = pg_lab.add_standby("b", a)
    oa, ob = a.observe(), b.observe()
    assert oa.running and oa.in_recovery is False and oa.timeline == 1 and oa.control_timeline == 1
    assert oa.cluster_state == "in production" and oa.current_lsn and oa.rewind_possible
    assert not oa.standby_signal and oa.conninfo_host is None and oa.history == ()
    assert ob.running and ob.in_recovery is True and ob.timeline == 1 and ob.replay_paused is False
    assert ob.standby_signal and (ob.conninfo_host, ob.conninfo_port) == (LOCAL, a.cfg.port)
    assert ob.wal_receiver is not None and ob.wal_receiver.status == "streaming"
    w = ob.wal_receiver
    assert (w.sender_host, w.sender_port, w.received_tli) == (LOCAL, a.cfg.port, 1)
    assert ob.system_identifier == oa.system_identifier and ob.cluster_state == "in archive recovery"
    assert lsn_to_int(ob.receive_lsn or "0/0") <= lsn_to_int(a.observe().current_lsn or "0/0")
    assert [r[0] for r in a.sql("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")] == ["b"]


def test_planned_switchover_is_lossless_and_old_primary_rejoins_without_rewind(pg_lab: PgLab) -> None:
    a = pg_lab.init_primary("a")
    a.sql("CREATE TABLE t (id bigserial PRIMARY KEY, v int)")
    b = pg_lab.add_standby("b", a)
    outputs: list[str] = []
    timings: dict[str, float] = {}
    writer = Writer(a)
    writer.start()
    wait_for(lambda: len(writer.acked) > 200, what="writes")

    with timed(timings, "checkpoint"):
        outputs.append(pgx.checkpoint(a.cfg))
    with timed(timings, "stop"):
        outputs.append(pgx.stop(a.cfg))
    writer.join(10)
    oa = a.observe()
    assert not oa.running and oa.cluster_state == "shut down" and oa.checkpoint_end_lsn
    end = oa.checkpoint_end_lsn
    ob = b.observe()
    # the fast shutdown waited until the connected standby had the checkpoint
    assert lsn_to_int(ob.receive_lsn or "0/0") >= lsn_to_int(end), (ob.receive_lsn, end)

    with timed(timings, "promote"):
        outputs.append(pgx.promote(b.cfg))
    ob = b.observe()
    assert ob.in_recovery is False and ob.timeline == 2 and ob.control_timeline == 2
    assert ob.history == (TimelineSwitch(parent=1, switchpoint=end),)
    assert set(writer.acked) <= ids(b), "acknowledged inserts lost"

    # rule 3: the switchpoint equals the old primary's checkpoint end -> follow without rewind
    with timed(timings, "rejoin_start"):
        outputs.append(pgx.start_standby(a.cfg, LOCAL, b.cfg.port, "a"))
    with timed(timings, "rejoin_streaming"):
        oa = wait_until_streaming(a, timeline=2)
    assert oa.timeline == 2 and oa.in_recovery and (oa.conninfo_host, oa.conninfo_port) == (LOCAL, b.cfg.port)
    new_id = b.sql("INSERT INTO t(v) VALUES (2) RETURNING id")[0][0]
    wait_for(lambda: new_id in ids(a), what="the new primary's row on the rejoined node")
    assert len(writer.acked) > 200 and set(writer.acked) <= ids(a)
    assert not any(pg_lab.password in o for o in outputs)
    print("\nswitchover timings (s):", {k: round(v, 3) for k, v in timings.items()}, f"acked={len(writer.acked)}")


def test_diverged_former_primary_is_detected_and_rewound(pg_lab: PgLab) -> None:
    a = pg_lab.init_primary("a")
    a.sql("CREATE TABLE t (id bigserial PRIMARY KEY, v int)")
    a.sql("INSERT INTO t(v) SELECT 1 FROM generate_series(1, 100)")
    b = pg_lab.add_standby("b", a)
    wait_for(lambda: len(ids(b)) == 100, what="replication")
    pgx.promote(b.cfg)  # while a is still writable: split brain
    a.sql("INSERT INTO t(v) SELECT 9 FROM generate_series(1, 50)")  # v=9: written after the fork
    kept = {r[0] for r in b.sql("INSERT INTO t(v) VALUES (2) RETURNING id")}
    outputs = [pgx.stop(a.cfg)]

    oa, ob = a.observe(), b.observe()
    switch = next(h.switchpoint for h in ob.history if h.parent == oa.checkpoint_timeline)
    assert oa.cluster_state == "shut down" and oa.checkpoint_end_lsn is not None
    assert oa.checkpoint_end_lsn != switch and lsn_to_int(oa.checkpoint_lsn or "0/0") >= lsn_to_int(switch)
    assert ob.control_timeline == ob.timeline == 2  # promote() checkpointed: rewind sees the fork

    outputs.append(pgx.rewind(a.cfg, LOCAL, b.cfg.port, "a"))
    oa = a.observe()
    assert oa.standby_signal and (oa.conninfo_host, oa.conninfo_port) == (LOCAL, b.cfg.port)
    outputs.append(pgx.start_standby(a.cfg, LOCAL, b.cfg.port, "a"))
    oa = wait_until_streaming(a, timeline=2)
    assert oa.timeline == 2
    wait_for(lambda: kept <= ids(a), what="the new primary's rows")
    assert a.sql("SELECT count(*) FROM t WHERE v = 9") == [(0,)], "pg_rewind discards what a wrote after the fork"
    assert any("rewinding from last common checkpoint" in o for o in outputs)
    assert not any(pg_lab.password in o for o in outputs)
    with open(os.path.join(a.cfg.data_dir, "postmaster.log")) as f:
        assert pg_lab.password not in f.read()


def sigkill_postmaster(node: Node) -> None:
    """A crash: SIGKILL the postmaster, then wait until it and its backends are gone."""
    pm = postmaster(node.cfg.data_dir)
    assert pm is not None
    os.kill(pm.pid, signal.SIGKILL)

    def gone() -> bool:  # until init reaps it, a zombie postmaster still holds postmaster.pid's lock
        return not processes_under(node.cfg.data_dir) and not os.path.exists(f"/proc/{pm.pid}")

    wait_for(gone, what="the killed postmaster and its backends to be gone")


def test_sigkilled_primary_is_crash_recovered_in_single_user_mode(pg_lab: PgLab) -> None:
    a = pg_lab.init_primary("a")
    a.sql("CREATE TABLE t (id bigserial PRIMARY KEY, v int)")
    a.sql("INSERT INTO t(v) SELECT 1 FROM generate_series(1, 10)")
    sigkill_postmaster(a)
    oa = a.observe()
    assert not oa.running and oa.cluster_state == "in production" and oa.checkpoint_end_lsn is None
    with pytest.raises(PostgresError, match="crash-recover first"):  # an unclean primary may hold WAL past the fork
        pgx.start_standby(a.cfg, LOCAL, 1, "a")
    assert not a.observe().running

    t0 = time.monotonic()
    pgx.crash_recover(a.cfg)
    print(f"\ncrash_recover: {time.monotonic() - t0:.3f} s")
    oa = a.observe()
    assert not oa.running and oa.cluster_state == "shut down" and oa.checkpoint_end_lsn is not None
    assert pgx.crash_recover(a.cfg) == ""  # already clean: nothing to do
    pgx.start_primary(a.cfg)
    assert len(ids(a)) == 10


def test_a_crashed_synchronous_primary_past_the_fork_holds_only_housekeeping_and_the_plan_says_at_most(pg_lab: PgLab) -> None:
    """What the plan says a rewind would discard, on real PostgreSQL 15: a synchronous primary
    SIGKILLed after acknowledged commits, its standby promoted, then our single-user crash recovery
    (archive_mode on, so its shutdown switches to a new WAL segment).  Past the fork it holds only
    the two checkpoints, hint-bit page images and the segment switch, yet its WAL ends ~16 MB
    later: the figure is an upper bound, and the message says so."""
    a = pg_lab.init_primary("a")
    b = pg_lab.add_standby("b", a)
    wait_for(lambda: set(a.observe().standby_flush) == {"b"}, 20, "b's flush position reported")
    pgx.set_sync(a.cfg, ("b",))
    wait_for(lambda: a.observe().sync_standbys == ("b",), 20, "b synchronous")
    a.sql("CREATE TABLE t (id bigserial PRIMARY KEY, v text)")
    for _ in range(40):  # each acknowledged only once b flushed it
        a.sql("INSERT INTO t(v) SELECT repeat('x', 100) FROM generate_series(1, 50)")
    sigkill_postmaster(a)
    pgx.promote(b.cfg)
    ob = wait_for(lambda: (x := b.observe()).in_recovery is False and x, 30, "b promoted")
    pgx.crash_recover(a.cfg)
    oa = a.observe()
    fork = next(h.switchpoint for h in ob.history if h.parent == 1)

    verdict, lost = pg_position.rejoin_verdict(oa, ob)
    assert verdict == "diverged" and f"WAL after the fork at {fork} on timeline 1" in lost
    past = lsn_to_int(oa.checkpoint_end_lsn or "0/0") - lsn_to_int(fork)
    assert past > 8 << 20 and f"at most {past:,} bytes" in lost and "padding to the end of that WAL segment" in lost
    argv = [pg_bin(a.cfg, "pg_waldump"), "-p", os.path.join(a.cfg.data_dir, "pg_wal"), "-t", "1", "-s", fork]
    out = run_as_owner(data_owner(a.cfg.data_dir), argv, 60, check=False).stdout
    kinds = re.findall(r"desc: (\w+)", out)
    assert kinds.count("CHECKPOINT_SHUTDOWN") == 2 and kinds[-1] == "CHECKPOINT_SHUTDOWN", out[-2000:]
    assert set(kinds) <= {"CHECKPOINT_SHUTDOWN", "FPI_FOR_HINT", "SWITCH"}, out[-2000:]


def test_clone_refuses_a_non_empty_directory_and_never_shows_the_password(pg_lab: PgLab) -> None:
    a = pg_lab.init_primary("a")
    b = pg_lab.new_node("b")
    keep = os.path.join(b.cfg.data_dir, "precious")
    with open(keep, "w") as f:
        f.write("data")
    with pytest.raises(PostgresError, match="not empty"):
        pgx.clone(b.cfg, LOCAL, a.cfg.port, "b")
    assert os.listdir(b.cfg.data_dir) == ["precious"]

    c = pg_lab.new_node("c")
    with pytest.raises(PostgresError) as e:  # nothing listens there
        pgx.clone(c.cfg, LOCAL, c.cfg.port, "c")
    assert pg_lab.password not in str(e.value) and os.listdir(c.cfg.data_dir) == []


def test_promote_refuses_paused_replay_and_retarget_moves_the_walreceiver(pg_lab: PgLab) -> None:
    a = pg_lab.init_primary("a")
    b = pg_lab.add_standby("b", a)
    c = pg_lab.add_standby("c", a)
    c.sql("SELECT pg_wal_replay_pause()")
    wait_for(lambda: c.observe().replay_paused, what="replay paused")
    with pytest.raises(PostgresError, match="paused"):
        pgx.promote(c.cfg)
    c.sql("SELECT pg_wal_replay_resume()")

    pgx.retarget(c.cfg, LOCAL, b.cfg.port, "c")  # cascade from the other standby

    def from_b() -> bool:
        w = c.observe().wal_receiver
        return w is not None and w.status == "streaming" and w.sender_port == b.cfg.port

    wait_for(from_b, what="c streaming from b")
    oc = c.observe()
    assert (oc.conninfo_host, oc.conninfo_port) == (LOCAL, b.cfg.port)
    with pytest.raises(PostgresError, match="promote it instead"):
        pgx.stop(c.cfg)
        pgx.start_primary(c.cfg)


def test_synchronous_replication_set_observed_kept_on_restart_reset_on_a_standby(pg_lab: PgLab) -> None:
    """Automatic failover's PostgreSQL part on real PostgreSQL 15: `set_sync` makes commits wait for
    the named standby (the owned file, then a reload); the observation shows the live value, the
    standby streaming and `sync`; a primary restarted in place keeps waiting (relaxing is a planned
    step); a standby's owned file never names anyone; pg_basebackup's stream is not the standby."""
    a = pg_lab.init_primary("a")
    b = pg_lab.add_standby("b", a)
    o = a.observe()
    assert (o.sync_names, o.streaming_standbys, o.sync_standbys) == ((), ("b",), ())
    # flush_lsn is NULL until the standby's first status message: absent from the observation, then b's
    assert set(o.standby_flush) <= {"b"}
    wait_for(lambda: set(a.observe().standby_flush) == {"b"}, 20, "b's flush position reported")
    pgx.set_sync(a.cfg, ("b",))
    o = wait_for(lambda: (x := a.observe()).sync_standbys == ("b",) and x, 20, "b synchronous")
    assert o.sync_names == ("b",) and o.streaming_standbys == ("b",)
    a.sql("CREATE TABLE s (v int)")
    pgx.stop(b.cfg)  # the synchronous standby gone: a commit waits (never acknowledged)
    done = threading.Event()

    def commit() -> None:
        with a.connect() as conn:
            conn.execute("INSERT INTO s VALUES (1)")
        done.set()

    threading.Thread(target=commit, daemon=True).start()
    waiting = wait_for(lambda: a.sql("SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'"), 10,
                       "a commit waiting for the synchronous standby")
    assert not done.wait(1.0), "a commit was acknowledged without its synchronous standby"
    a.sql("SELECT pg_cancel_backend(%s)", (waiting[0][0],))
    assert done.wait(10)
    pgx.stop(a.cfg)
    pgx.start_primary(a.cfg)  # restarted in place: still synchronous
    assert a.observe().sync_names == ("b",)
    pgx.set_sync(a.cfg, ())
    wait_for(lambda: a.observe().sync_names == (), 20, "synchronous replication relaxed")
    a.sql("INSERT INTO s VALUES (2)")
    pgx.start_standby(b.cfg, LOCAL, a.cfg.port, "b")
    wait_until_streaming(b)
    assert b.observe().sync_names == ()  # a standby's owned file names nobody
    c = pg_lab.new_node("c")
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:  # what the primary shows while pg_basebackup streams
        while not done.is_set():
            seen.update(r[0] for r in a.sql("SELECT application_name FROM pg_stat_replication"))
            time.sleep(0.02)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    pgx.clone(c.cfg, LOCAL, a.cfg.port, "c")
    done.set()
    t.join(5)
    assert "c" not in seen and pgx.CLONE_APPLICATION_NAME in seen, seen


def test_a_cascading_standby_follows_its_upstreams_promotion_and_the_flush_shows_when(pg_lab: PgLab) -> None:
    """The holder publishes its peer as the failover candidate only once the peer has flushed past
    the start of the holder's timeline (plan/leadership.py): on real PostgreSQL 15 a standby that
    streamed from a standby before that one was promoted follows the new timeline, and the
    promoted server's pg_stat_replication shows its flush position passing the fork."""
    a = pg_lab.init_primary("a")
    b = pg_lab.add_standby("b", a)
    c = pg_lab.add_standby("c", b)
    pgx.stop(a.cfg)
    pgx.promote(b.cfg)
    ob = wait_for(lambda: (x := b.observe()).in_recovery is False and x, 30, "b promoted")
    start = pg_position.timeline_start(ob)
    assert ob.timeline == 2 and start is not None
    b.sql("CREATE TABLE t (v int)")  # WAL on timeline 2 past the fork
    ob = wait_for(lambda: (x := b.observe()).standby_flush.get("c") and lsn_to_int(x.standby_flush["c"]) > start and x,
                  30, "c flushed past the fork")
    assert "c" in ob.streaming_standbys
    wait_until_streaming(c, timeline=2)
