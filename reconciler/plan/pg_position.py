"""WAL positions and timelines: who is ahead of whom, and has a former primary diverged.

Pure helpers over `PostgresObs`, encoding PostgreSQL's rules:
- a clean fast shutdown streams the shutdown checkpoint to a *connected* standby; a
  planned promotion waits until this standby has received past its end;
- promotion forks a new timeline at the end of the last replayed record;
- a stopped former primary follows the new primary without pg_rewind iff the new
  primary's history switchpoint for its timeline equals the end of its shutdown
  checkpoint (Patroni's rule); a standby has diverged iff it replayed past that point.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.model import PostgresObs, lsn_to_int

CLEAN_PRIMARY = "shut down"
STOPPED_STANDBY = {"shut down in recovery", "in archive recovery"}


@dataclass(frozen=True)
class Position:
    timeline: int
    lsn: int | None  # None: unknown upper bound (a primary that crashed in place)


def lsn(value: str | None) -> int | None:
    return None if value is None else lsn_to_int(value)


def is_writable(pg: PostgresObs) -> bool:
    return pg.running and pg.in_recovery is False


def is_crashed_primary(pg: PostgresObs) -> bool:
    """Stopped, and pg_control says it did not finish a clean shutdown as a primary.

    standby.signal present means the last start was as a standby (or a fresh clone or
    rewind that will start as one): that is a crashed standby, safe to start again."""
    return (
        (not pg.running)
        and not pg.data_dir_empty
        and not pg.standby_signal
        and pg.cluster_state not in ({CLEAN_PRIMARY, None} | STOPPED_STANDBY)
    )


def running_standby_position(pg: PostgresObs) -> Position | None:
    if not (pg.running and pg.in_recovery) or pg.timeline is None:
        return None
    vals = [v for v in (lsn(pg.receive_lsn), lsn(pg.replay_lsn)) if v is not None]
    return Position(pg.timeline, max(vals) if vals else None)


def clean_shutdown_position(pg: PostgresObs) -> Position | None:
    if pg.running or pg.cluster_state != CLEAN_PRIMARY or pg.checkpoint_timeline is None:
        return None
    return Position(pg.checkpoint_timeline, lsn(pg.checkpoint_end_lsn))


def switchpoint(history_of: PostgresObs, parent: int) -> int | None:
    """Where `history_of`'s history says timeline `parent` ended (None: not in its history)."""
    for sw in history_of.history:
        if sw.parent == parent:
            return lsn_to_int(sw.switchpoint)
    return None


def timeline_start(pg: PostgresObs) -> int | None:
    """Where this server's current timeline began (its last history switchpoint; None on
    timeline 1, or when the history is unknown)."""
    if not pg.history:
        return None
    return lsn_to_int(max(pg.history, key=lambda sw: sw.parent).switchpoint)


def fmt(value: int | None) -> str:
    if value is None:
        return "unknown"
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def not_ahead(peer: Position, own: Position, own_pg: PostgresObs, lag: int) -> tuple[bool, str]:
    """Does `own` hold everything `peer` has (within `lag` bytes)?  Returns (holds, why-not)."""
    if peer.timeline == own.timeline:
        if own.lsn is None:
            return True, ""
        if peer.lsn is None:
            return False, f"the peer's position on timeline {peer.timeline} is unknown"
        ok = peer.lsn <= own.lsn + lag
        return ok, f"has received {fmt(own.lsn)}, but the peer's WAL ends at {fmt(peer.lsn)}"
    if peer.timeline < own.timeline:
        sp = switchpoint(own_pg, peer.timeline)
        if sp is None or peer.lsn is None:
            return False, f"cannot place the peer's timeline {peer.timeline} in this node's history"
        return peer.lsn <= sp, f"the peer has WAL on timeline {peer.timeline} up to {fmt(peer.lsn)}, past this node's fork at {fmt(sp)}"
    return False, f"the peer is on timeline {peer.timeline}, newer than this node's {own.timeline}"


def rejoin_verdict(own: PostgresObs, source: PostgresObs) -> tuple[str, str]:
    """For a stopped clean former primary or a running standby vs a running primary source:
    ('follow', '') | ('diverged', what-is-lost) | ('unknown', why)."""
    mine = clean_shutdown_position(own) or running_standby_position(own)
    if mine is None or source.timeline is None:
        return "unknown", "positions unknown"
    if source.timeline == mine.timeline:
        if own.running:
            return "follow", ""
        return "unknown", f"both were primary on timeline {mine.timeline}: an operator must decide"
    if source.timeline < mine.timeline:
        return "unknown", f"the source is on an older timeline ({source.timeline} < {mine.timeline})"
    sp = switchpoint(source, mine.timeline)
    if sp is None or mine.lsn is None:
        return "unknown", f"timeline {mine.timeline} is not in the source's history"
    if own.running:
        ok = mine.lsn <= sp
    else:
        ok = mine.lsn == sp
    if ok:
        return "follow", ""
    return "diverged", (
        f"WAL after the fork at {fmt(sp)} on timeline {mine.timeline} (this node's WAL ends at {fmt(mine.lsn)}: "
        f"at most {max(mine.lsn - sp, 0):,} bytes, counting its shutdown checkpoint and, after a crash "
        f"recovery, the end-of-recovery checkpoint and the padding to the end of that WAL segment)"
    )
