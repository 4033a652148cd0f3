"""The guards that only an operator can lift.

Most guards wait on something that moves by itself: the peer's agent steps down, the
peer comes back, DRBD finishes a resync, PostgreSQL finishes starting.  These do not:
nothing the agents do, and no amount of waiting, lifts them; a person must act (resolve
the split brain, move a data directory aside, declare a node fenced, resume WAL replay,
unmount what is in the way).  An action that waits only on guards of this set is
reported once, and re-checked at the drift interval or on a spec change instead of being
polled.  A peer that is unreachable is *not* here: it may come back on its own.
"""

from __future__ import annotations

from reconciler.plan.actions import Action, Guard

OPERATOR_ONLY: frozenset[str] = frozenset({
    "no_split_brain",  # DRBD split brain: an operator decides whose data survives (plan/drbd.py)
    "mount_point_free",  # something else is mounted where the resource goes (plan/drbd.py)
    "target_empty",  # needs re-clone: the operator moves the data directory aside (plan/postgres.py)
    "declared_fenced",  # a rewind discards data: only `fenced:` in the spec consents (plan/postgres.py)
    "rewind_possible",  # no wal_log_hints or checksums here: re-clone by hand (plan/postgres.py)
    "same_system",  # the peer is another database system altogether (plan/postgres.py)
    "replay_not_paused",  # someone paused WAL replay here: pg_wal_replay_resume() (plan/postgres.py)
})


def unmet(a: Action) -> tuple[Guard, ...]:
    return tuple(g for g in a.guards if not g.holds)


def operator_only(a: Action) -> bool:
    """`a` waits, and only on guards that nothing but an operator lifts."""
    waiting = unmet(a)
    return bool(waiting) and all(g.name in OPERATOR_ONLY for g in waiting)
