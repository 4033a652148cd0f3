"""The closed set of actions the planner can emit, and the plan that orders them.

An `Action` is data: what it changes (`kind`, `target`, `items`), why (`reason`, for
humans only: the executor never reads it), and the guards it waits on.  A guard that
does not hold makes the action *blocked*; execution stops at the first blocked action
and the loop waits (polls) instead of retrying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from reconciler.address import Address


class Kind(str, Enum):
    """Each kind: precondition -> effect (postcondition)."""

    STOP_SERVICE = "stop_service"  # service active -> inactive
    START_SERVICE = "start_service"  # inactive -> active (after mounts, PostgreSQL and IPs)
    SET_PROMOTE_SECONDARIES = "set_promote_secondaries"  # sysctl promote_secondaries=1 on `target`
    REMOVE_ADDRESSES = "remove_addresses"  # owned addresses `items` on `target` -> gone (secondaries first)
    ADOPT_ADDRESSES = "adopt_addresses"  # untagged desired addresses -> tagged as ours, then announced
    ADD_ADDRESSES = "add_addresses"  # missing desired addresses -> present, tagged, then announced
    UNMOUNT = "unmount"  # mount point `target` mounted -> not mounted
    MOUNT = "mount"  # DRBD device mounted on the resource's mount point
    DRBD_UP = "drbd_up"  # resource not configured -> attached and connecting (drbdadm up)
    DRBD_CONNECT = "drbd_connect"  # StandAlone -> connecting (drbdadm connect)
    DRBD_SECONDARY = "drbd_secondary"  # Primary -> Secondary (fails -12 while held open)
    DRBD_PRIMARY = "drbd_primary"  # Secondary -> Primary (never --force)
    PG_STOP = "pg_stop"  # running -> CHECKPOINT, then pg_ctl stop -m fast: cleanly shut down
    PG_CRASH_RECOVER = "pg_crash_recover"  # crashed primary data dir -> single-user recovery -> shut down
    PG_CLONE = "pg_clone"  # empty data dir -> pg_basebackup of the source, as a standby
    PG_REWIND = "pg_rewind"  # diverged data dir -> pg_rewind from the source, configs re-rendered
    PG_START_STANDBY = "pg_start_standby"  # stopped -> standby.signal, owned conninfo, start
    PG_RETARGET = "pg_retarget"  # running standby -> owned conninfo rewritten, reloaded
    PG_START_PRIMARY = "pg_start_primary"  # cleanly stopped primary (or crashed in place) -> writable
    PG_PROMOTE = "pg_promote"  # standby -> pg_promote(true, N), then CHECKPOINT
    PG_CHECKPOINT = "pg_checkpoint"  # promoted, pg_control timeline stale -> CHECKPOINT
    # Part of this node's state is not known (its observation failed, or PostgreSQL is
    # starting or stopping and answers no query): always planned blocked, never executed;
    # it goes away once that state can be read.  "Nothing to do" is never said of a guess.
    AWAIT = "await"


# Terraform-style symbols: + creates/starts, - removes/stops, ~ changes in place,
# ? waits until the state can be read.
SYMBOL = {
    Kind.STOP_SERVICE: "-",
    Kind.START_SERVICE: "+",
    Kind.SET_PROMOTE_SECONDARIES: "~",
    Kind.REMOVE_ADDRESSES: "-",
    Kind.ADOPT_ADDRESSES: "~",
    Kind.ADD_ADDRESSES: "+",
    Kind.UNMOUNT: "-",
    Kind.MOUNT: "+",
    Kind.DRBD_UP: "+",
    Kind.DRBD_CONNECT: "~",
    Kind.DRBD_SECONDARY: "~",
    Kind.DRBD_PRIMARY: "~",
    Kind.PG_STOP: "-",
    Kind.PG_CRASH_RECOVER: "~",
    Kind.PG_CLONE: "+",
    Kind.PG_REWIND: "~",
    Kind.PG_START_STANDBY: "+",
    Kind.PG_RETARGET: "~",
    Kind.PG_START_PRIMARY: "+",
    Kind.PG_PROMOTE: "~",
    Kind.PG_CHECKPOINT: "~",
    Kind.AWAIT: "?",
}


@dataclass(frozen=True)
class Guard:
    """A condition on observed state an action waits for; `text` says what is awaited."""

    name: str
    holds: bool
    text: str


@dataclass(frozen=True)
class Action:
    kind: Kind
    target: str  # interface, mount point, resource, service or "postgres"
    reason: str  # the diff that caused it, one sentence; for humans only
    items: tuple[Address, ...] = ()  # addresses for the address kinds
    guards: tuple[Guard, ...] = ()
    loses: str | None = None  # what executing it discards, when it discards anything
    params: tuple[tuple[str, str], ...] = ()  # extra executor inputs (e.g. source host/port)

    @property
    def blocked(self) -> bool:
        return any(not g.holds for g in self.guards)

    @property
    def waiting_on(self) -> tuple[str, ...]:
        return tuple(g.text for g in self.guards if not g.holds)

    @property
    def symbol(self) -> str:
        return SYMBOL[self.kind]

    def param(self, key: str, default: str | None = None) -> str | None:
        return dict(self.params).get(key, default)


@dataclass(frozen=True)
class Plan:
    node: str
    actions: tuple[Action, ...] = ()
    notes: tuple[str, ...] = field(default=())  # things the operator must know that no action fixes
    peer_reachable: bool = True

    @property
    def empty(self) -> bool:
        return not self.actions

    @property
    def next_action(self) -> Action | None:
        return self.actions[0] if self.actions else None
