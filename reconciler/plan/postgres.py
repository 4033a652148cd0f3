"""PostgreSQL: writable on the spec's Primary only, a standby of the source elsewhere.

Safety rules (see pg_position for the WAL arithmetic):
- a standby is promoted, or a stopped primary started writable, only when the peer is
  not writable and holds no WAL this node lacks (or the peer is declared fenced);
- a node that must not be Primary is stopped with CHECKPOINT + fast shutdown, never
  immediate; a crashed one is crash-recovered in single-user mode, never started
  directly as a standby;
- a diverged former primary is rewound only when the operator declared it fenced (the
  plan says what is discarded); otherwise it waits with the reason.
"""

from __future__ import annotations

from reconciler.model import PostgresObs
from reconciler.plan import pg_position as pos
from reconciler.plan import unknown
from reconciler.plan.actions import Action, Guard, Kind
from reconciler.plan.context import Ctx
from reconciler.plan.kinds import ReplicationSource

PG = "postgres"


def _source(ctx: Ctx) -> tuple[str | None, ReplicationSource | None, PostgresObs | None, bool]:
    """(source name, where to replicate from, source observation, source known) for a standby."""
    cfg = ctx.spec.model.postgres
    assert cfg is not None
    src = cfg.replication_source
    if src == "primary":
        src = ctx.primary
    if src in ("none", ctx.me):
        return None, None, None, False
    if src in ctx.spec.model.nodes:
        source = ReplicationSource(ctx.spec.model.nodes[src].address, cfg.port, ctx.me)
        obs = ctx.peer.postgres if (ctx.peer is not None and src == ctx.peer_name) else None
        return src, source, obs, obs is not None
    host, _, port = src.rpartition(":")  # the spec checked it is host:port
    return src, ReplicationSource(host.strip("[]"), int(port), ctx.me), None, True


def plan_postgres(ctx: Ctx) -> tuple[list[Action], list[str]]:
    if ctx.spec.model.postgres is None:
        return [], []
    o = ctx.own.postgres
    assert o is not None, "unobserved PostgreSQL is an AWAIT of unknown.unobserved; nothing else is planned"
    if o.running and o.in_recovery is None:
        return [unknown.not_answering(ctx, o)], []
    if ctx.is_primary:
        return _as_primary(ctx, o), []
    return _as_secondary(ctx, o)


# ---- the Primary -------------------------------------------------------------------


def _peer_position_guards(ctx: Ctx, mine: pos.Position | None, own: PostgresObs) -> list[Guard]:
    """Guards shared by promotion and by starting a stopped primary writable."""
    reach = ctx.peer_reachable_guard("its PostgreSQL is stopped and not ahead")
    if reach is not None:
        return [reach]
    peer_pg = ctx.peer.postgres if ctx.peer is not None else None
    p = ctx.peer_name
    if peer_pg is None:
        return [Guard("peer_position_known", False, f"peer {p} could not observe its PostgreSQL")]
    if peer_pg.data_dir_empty:
        return []
    if pos.is_writable(peer_pg):
        return [Guard("peer_not_writable", False, f"peer {p} PostgreSQL is still a writable primary (timeline {peer_pg.timeline})")]
    if ctx.peer_fenced:
        return [Guard("peer_fenced", True, f"peer {p} is declared fenced: its position is not awaited")]
    if ctx.peer_lease_ended:
        return [Guard("peer_lease_ended", True, f"peer {p} lost its lease and {ctx.me} took over as the synchronous "
                                                "candidate: it has every commit the peer acknowledged")]
    if own.system_identifier and peer_pg.system_identifier and own.system_identifier != peer_pg.system_identifier:
        return [Guard("same_system", False, f"peer {p} is a different database system ({peer_pg.system_identifier})")]
    theirs = pos.clean_shutdown_position(peer_pg) or pos.running_standby_position(peer_pg)
    if theirs is None and peer_pg.running and peer_pg.in_recovery is None:
        return [Guard("peer_position_known", False, f"peer {p} PostgreSQL is starting up or shutting down: "
                                                    "its position is read once it accepts connections")]
    if theirs is None:
        state = peer_pg.cluster_state or "unknown"
        what = "a stopped standby" if state in pos.STOPPED_STANDBY else f"stopped uncleanly ({state})"
        return [Guard("peer_position_known", False, f"peer {p} PostgreSQL is {what}; waiting for its agent to bring it to a known position")]
    if mine is None:
        return [Guard("own_position_known", False, "this node's WAL position is unknown")]
    lag = ctx.spec.model.postgres.max_promotion_lag_bytes if ctx.spec.model.postgres else 0
    ok, why = pos.not_ahead(theirs, mine, own, lag)
    if not ok and peer_pg.cluster_state == pos.CLEAN_PRIMARY and theirs.timeline == mine.timeline:
        why = f"standby has received {pos.fmt(mine.lsn)}, old primary's shutdown checkpoint ends at {pos.fmt(theirs.lsn)}"
    return [Guard("peer_not_ahead", ok, why or "holds")]


def _as_primary(ctx: Ctx, o: PostgresObs) -> list[Action]:
    if pos.is_writable(o):
        if o.control_timeline is not None and o.timeline is not None and o.control_timeline < o.timeline:
            return [Action(Kind.PG_CHECKPOINT, PG, "promoted, but pg_control still shows the old timeline (needed before any pg_rewind against this node)")]
        return []
    if o.running:  # a standby
        guards = _peer_position_guards(ctx, pos.running_standby_position(o), o)
        if o.replay_paused:
            guards.append(Guard("replay_not_paused", False, "WAL replay is paused here; resume it with SELECT pg_wal_replay_resume()"))
        return [Action(Kind.PG_PROMOTE, PG, f"spec says {ctx.me} is Primary; PostgreSQL is a standby here", guards=tuple(guards))]
    return _start_as_primary(ctx, o)


def _start_as_primary(ctx: Ctx, o: PostgresObs) -> list[Action]:
    peer_source = _peer_source(ctx)
    if o.data_dir_empty:
        return [_clone(ctx, peer_source, "the data directory is empty")]
    if o.cluster_state in pos.STOPPED_STANDBY or (o.standby_signal and o.cluster_state != pos.CLEAN_PRIMARY):
        return [Action(Kind.PG_START_STANDBY, PG, "a stopped standby starts as a standby first; promotion follows", payload=peer_source)]
    if o.cluster_state == pos.CLEAN_PRIMARY:
        mine = pos.clean_shutdown_position(o)
    else:  # crashed in place as the primary: crash recovery on start, as PostgreSQL does itself
        mine = pos.Position(o.checkpoint_timeline, None) if o.checkpoint_timeline else None
    guards = _peer_position_guards(ctx, mine, o)
    if all(g.holds for g in guards) or peer_source is None or ctx.peer is None:
        why = f"spec says {ctx.me} is Primary; PostgreSQL is stopped ({o.cluster_state})"
        return [Action(Kind.PG_START_PRIMARY, PG, why, guards=tuple(guards))]
    peer_pg = ctx.peer.postgres
    if peer_pg is not None and pos.is_crashed_primary(peer_pg):
        return [Action(Kind.PG_START_PRIMARY, PG, "waiting for the peer's crash recovery", guards=tuple(guards))]
    if o.cluster_state != pos.CLEAN_PRIMARY:
        why = f"stopped uncleanly ({o.cluster_state}) and the peer may be ahead: recover in single-user mode first, never start it straight as a standby"
        return [Action(Kind.PG_CRASH_RECOVER, PG, why)]
    return [Action(Kind.PG_START_STANDBY, PG, "the peer may hold WAL this node lacks: start as its standby to catch up, then promote", payload=peer_source)]


def _peer_source(ctx: Ctx) -> ReplicationSource | None:
    cfg = ctx.spec.model.postgres
    if ctx.peer_name is None or cfg is None:
        return None
    return ReplicationSource(ctx.spec.model.nodes[ctx.peer_name].address, cfg.port, ctx.me)


def _clone(ctx: Ctx, source: ReplicationSource | None, why: str) -> Action:
    src = ctx.peer.postgres if ctx.peer is not None else None
    ok = source is not None and src is not None and src.running
    g = Guard("source_running", ok, f"the source {ctx.peer_name} must be running to clone from it")
    return Action(Kind.PG_CLONE, PG, f"{why}: clone it from the source (pg_basebackup into the empty directory)", guards=(g,), payload=source)


# ---- not the Primary ------------------------------------------------------------------


def _as_secondary(ctx: Ctx, o: PostgresObs) -> tuple[list[Action], list[str]]:
    src, source, src_pg, known = _source(ctx)
    if pos.is_writable(o):
        return [Action(Kind.PG_STOP, PG, f"{ctx.me} is not the Primary: PostgreSQL must not be writable here (CHECKPOINT, then fast shutdown)")], []
    if o.running:
        return _running_standby(ctx, o, src, source, src_pg)
    if src is None or source is None:
        return [], []
    if o.data_dir_empty:
        g = Guard("source_running", src_pg is not None and src_pg.running, f"the source {src} must be running to clone from it")
        return [Action(Kind.PG_CLONE, PG, "the data directory is empty: clone it from the source", guards=(g,), payload=source)], []
    if pos.is_crashed_primary(o):
        return _crashed_former_primary(ctx, o, source, src_pg), []
    if o.cluster_state == pos.CLEAN_PRIMARY:
        return _clean_former_primary(ctx, o, src, source, src_pg, known)
    return [Action(Kind.PG_START_STANDBY, PG, f"a stopped standby: start it following {src}", payload=source)], []


def _running_standby(ctx: Ctx, o: PostgresObs, src: str | None, source: ReplicationSource | None,
                     src_pg: PostgresObs | None) -> tuple[list[Action], list[str]]:
    if src is None or source is None:
        return [], []
    if src_pg is not None and pos.is_writable(src_pg) and (src_pg.timeline or 0) > (o.timeline or 0):
        verdict, lost = pos.rejoin_verdict(o, src_pg)
        if verdict == "diverged":
            return _rewind_or_block(ctx, o, source, src_pg, lost)
    if (o.conninfo_host, o.conninfo_port or None) != (source.host, source.port):
        return [Action(Kind.PG_RETARGET, PG, f"the standby follows {o.conninfo_host}:{o.conninfo_port}, not {src} ({source.host}:{source.port})", payload=source)], []
    return [], []


def _crashed_former_primary(ctx: Ctx, o: PostgresObs, source: ReplicationSource, src_pg: PostgresObs | None) -> list[Action]:
    if (ctx.me_fenced and src_pg is not None and pos.is_writable(src_pg)
            and o.checkpoint_timeline != src_pg.timeline):  # one timeline number: see _needs_reclone
        return _rewind_or_block(ctx, o, source, src_pg, f"whatever {ctx.me} wrote after the fork (at least {pos.fmt(pos.lsn(o.checkpoint_lsn))} was reached)")[0]
    return [Action(Kind.PG_CRASH_RECOVER, PG, f"PostgreSQL stopped uncleanly as a primary ({o.cluster_state}): recover it in single-user mode (no clients), never start it straight as a standby")]


def _clean_former_primary(ctx: Ctx, o: PostgresObs, src: str, source: ReplicationSource, src_pg: PostgresObs | None,
                          known: bool) -> tuple[list[Action], list[str]]:
    start = Action(Kind.PG_START_STANDBY, PG, f"the former primary rejoins as a standby of {src}", payload=source)
    if not known:
        g = Guard("source_reachable", False, f"the source {src} is unreachable: cannot tell whether this node can follow it without pg_rewind")
        return [Action(Kind.PG_START_STANDBY, PG, start.reason, guards=(g,), payload=source)], []
    if src_pg is None:  # an external source: nothing to compare against
        return [start], []
    if pos.is_writable(src_pg):
        verdict, detail = pos.rejoin_verdict(o, src_pg)
        if verdict == "follow":
            return [start], []
        if verdict == "diverged":
            return _rewind_or_block(ctx, o, source, src_pg, detail)
        if ctx.me_fenced and o.checkpoint_timeline == src_pg.timeline:
            return [_needs_reclone(ctx, o, src, source)], []
        if ctx.me_fenced:  # written off by the operator: pg_rewind finds the real fork point itself
            return _rewind_or_block(ctx, o, source, src_pg, f"whatever {ctx.me} wrote after the fork ({detail})")
        g = Guard("rejoin_decidable", False, f"cannot tell whether {ctx.me} can follow {src}: {detail}")
        return [Action(Kind.PG_START_STANDBY, PG, start.reason, guards=(g,), payload=source)], []
    if ctx.me_fenced and not src_pg.data_dir_empty:
        # A fenced node is written off: nobody waits for its WAL, and it rejoins only once it
        # can be checked against a running primary (started as a standby of anything else, it
        # could sit on a fork of that primary's timeline that nothing would ever notice).
        # Unless the source has no data at all: then this node is the only copy to clone.
        g = Guard("source_writable", False, f"{ctx.me} is declared fenced: it rejoins once {src} runs as the primary "
                                            "and its history can be checked against it")
        return [Action(Kind.PG_START_STANDBY, PG, start.reason, guards=(g,), payload=source)], []
    theirs = pos.running_standby_position(src_pg)
    mine = pos.clean_shutdown_position(o)
    if theirs and mine and theirs.timeline == mine.timeline and theirs.lsn is not None and mine.lsn is not None and theirs.lsn > mine.lsn:
        g = Guard("rejoin_decidable", False, f"{src} has WAL past this node's shutdown checkpoint on the same timeline")
        return [Action(Kind.PG_START_STANDBY, PG, start.reason, guards=(g,), payload=source)], []
    idle = f"start as a standby so that {src} can stream the WAL it may lack from here"
    return [Action(Kind.PG_START_STANDBY, PG, idle, payload=source)], []


def _needs_reclone(ctx: Ctx, o: PostgresObs, src: str | None, source: ReplicationSource) -> Action:
    """Both nodes were primary on one timeline number: PostgreSQL picks the next number from
    the history files it knows, and a standby promoted without having seen the other's
    promotion reuses it.  pg_rewind compares timeline numbers ("source and target cluster
    are on the same timeline": nothing to rewind), so only a fresh clone is safe, and that
    is the operator's call: the plan says so and stops."""
    tl = o.checkpoint_timeline
    cfg = ctx.spec.model.postgres
    data = cfg.data_dir.replace("{node}", ctx.me) if cfg is not None else "the data directory"
    g = Guard("target_empty", False,
              f"needs re-clone: {ctx.me} and {src} were both primary on timeline {tl}, two different histories under "
              f"one number that pg_rewind cannot tell apart. Move {data} aside (it keeps what {ctx.me} wrote on its "
              f"timeline {tl}) and leave an empty directory: the agent then clones it from {src}")
    return Action(Kind.PG_CLONE, PG, f"{ctx.me} cannot follow {src} and cannot be rewound", guards=(g,), payload=source,
                  loses=f"this node's timeline {tl} (kept in the moved-aside copy)")


def _rewind_or_block(ctx: Ctx, o: PostgresObs, source: ReplicationSource, src_pg: PostgresObs, lost: str) -> tuple[list[Action], list[str]]:
    why = f"{ctx.me} diverged from the new primary: pg_rewind discards {lost}"
    guards = [
        Guard("declared_fenced", ctx.me_fenced, f"{ctx.me} diverged; rewinding it discards {lost}. To accept, declare `fenced: [{ctx.me}]`; or re-clone it by hand"),
        Guard("rewind_possible", o.rewind_possible is not False, "pg_rewind needs wal_log_hints=on or data checksums here: re-clone this node instead"),
        Guard("source_checkpointed", src_pg.control_timeline == src_pg.timeline, "the new primary has not checkpointed since its promotion yet"),
    ]
    act = Action(Kind.PG_REWIND, PG, why, guards=tuple(guards), loses=lost, payload=source)
    return [act], []
