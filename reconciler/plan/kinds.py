"""The action kinds: what each one is, in one row, and the typed payload it carries.

Adding a kind: a member of `Kind`, its row in `_row` (mypy --strict reports a kind left
out), its executor in `reconciler.execute.dispatch._execute` (likewise) and its effect in
the simulator (`tests/sim/act.py`).  A row says how the plan shows the kind (`symbol`,
`title`), whether it promotes or demotes this node (`changes_role`: it then waits until
both agents apply the same roles), whether its items are addresses (listed and counted
one per address), and which payload type the executor needs (`payload`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import assert_never


@dataclass(frozen=True)
class ReplicationSource:
    """The server a standby clones from, rewinds from or follows, and this node's name
    (the `application_name` it connects with)."""

    host: str
    port: int
    node: str

    def text_fields(self) -> dict[str, str]:
        return {"host": self.host, "port": str(self.port), "node": self.node}


@dataclass(frozen=True)
class DrbdMount:
    """The DRBD resource whose device is mounted (on the action's target, its mount point)."""

    resource: str
    device: str

    def text_fields(self) -> dict[str, str]:
        return {"device": self.device, "resource": self.resource}


@dataclass(frozen=True)
class Acquisition:
    """What an acquisition was decided on: etcd's last epoch and its candidate key as observed
    (None: none).  The transaction succeeds only if etcd still shows exactly that."""

    after_epoch: int
    candidate: str | None = None
    candidate_epoch: int | None = None

    def text_fields(self) -> dict[str, str]:
        return {"epoch": str(self.after_epoch + 1)}


Payload = ReplicationSource | DrbdMount | Acquisition


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
    # Automatic failover (plan/leadership.py): etcd transactions, synchronous replication, watchdog.
    COORD_ACQUIRE = "coord_acquire"  # nobody holds the leader key -> this node at epoch+1, under its lease
    COORD_RELEASE = "coord_release"  # held (planned switchover, demoted) -> deleted; the candidate stays
    COORD_PUBLISH = "coord_publish"  # the synchronous standby `target` -> the candidate of this epoch
    COORD_WITHDRAW = "coord_withdraw"  # candidate `target` -> none (before synchronous replication is relaxed)
    PG_SYNC_ON = "pg_sync_on"  # synchronous_standby_names = `target` (the peer's application_name), reload
    PG_SYNC_OFF = "pg_sync_off"  # synchronous_standby_names = '' (only once no candidate is published), reload
    WATCHDOG_ARM = "watchdog_arm"  # the keeper opens the watchdog device: fed after each renewal from now on
    WATCHDOG_DISARM = "watchdog_disarm"  # the keeper closes it with the magic character
    # Part of this node's state is not known (its observation failed, or PostgreSQL is
    # starting or stopping and answers no query): always planned blocked, never executed;
    # it goes away once that state can be read.  "Nothing to do" is never said of a guess.
    AWAIT = "await"

    @property
    def row(self) -> Row:
        return _ROWS[self]


@dataclass(frozen=True)
class Row:
    """What one kind means to the plan: how it is shown, whether it waits for the roles to
    agree, and what it carries to its executor."""

    # Terraform-style: + creates/starts, - removes/stops, ~ changes in place, ? waits until
    # the state can be read.
    symbol: str
    # How `plan` names it: {t} is the target, a payload's text fields go by their names
    # ("?" when the action has none); {addresses} is one address or a run of them.
    title: str
    # Promotes or demotes this node (bring-up, rejoin and drift do not): waits while the
    # two agents apply different roles (plan/agreement.py).
    changes_role: bool = False
    # Its items are addresses: listed and counted one change per address.
    addresses: bool = False
    # The payload its executor reads; an action of this kind carries one of this type or none.
    payload: type[ReplicationSource] | type[DrbdMount] | type[Acquisition] | None = None


def _row(kind: Kind) -> Row:
    """The row of `kind`; a kind without one is an error of mypy --strict (assert_never)."""
    match kind:
        case Kind.STOP_SERVICE:
            return Row("-", "stop service {t}", changes_role=True)
        case Kind.START_SERVICE:
            return Row("+", "start service {t}", changes_role=True)
        case Kind.SET_PROMOTE_SECONDARIES:
            return Row("~", "set net.ipv4.conf.{t}.promote_secondaries = 1")
        case Kind.REMOVE_ADDRESSES:
            return Row("-", "{addresses} on {t}", changes_role=True, addresses=True)
        case Kind.ADOPT_ADDRESSES:
            return Row("~", "adopt {addresses} on {t}", changes_role=True, addresses=True)
        case Kind.ADD_ADDRESSES:
            return Row("+", "{addresses} on {t}", changes_role=True, addresses=True)
        case Kind.UNMOUNT:
            return Row("-", "unmount {t}", changes_role=True)
        case Kind.MOUNT:
            return Row("+", "mount {device} on {t}", changes_role=True, payload=DrbdMount)
        case Kind.DRBD_UP:
            return Row("+", "drbd {t}: up (attach and connect)")
        case Kind.DRBD_CONNECT:
            return Row("~", "drbd {t}: connect")
        case Kind.DRBD_SECONDARY:
            return Row("~", "drbd {t}: Primary -> Secondary", changes_role=True)
        case Kind.DRBD_PRIMARY:
            return Row("~", "drbd {t}: Secondary -> Primary", changes_role=True)
        case Kind.PG_STOP:
            return Row("-", "postgres: CHECKPOINT, then fast shutdown", changes_role=True)
        case Kind.PG_CRASH_RECOVER:
            return Row("~", "postgres: crash recovery in single-user mode")
        case Kind.PG_CLONE:
            return Row("+", "postgres: clone from {host}:{port} (pg_basebackup)", payload=ReplicationSource)
        case Kind.PG_REWIND:
            return Row("~", "postgres: pg_rewind from {host}:{port}, then start as a standby", payload=ReplicationSource)
        case Kind.PG_START_STANDBY:
            return Row("+", "postgres: start as a standby of {host}:{port}", payload=ReplicationSource)
        case Kind.PG_RETARGET:
            return Row("~", "postgres: follow {host}:{port} (primary_conninfo, reload)", payload=ReplicationSource)
        case Kind.PG_START_PRIMARY:
            return Row("+", "postgres: start as the primary", changes_role=True)
        case Kind.PG_PROMOTE:
            return Row("~", "postgres: promote (standby -> primary), then CHECKPOINT", changes_role=True)
        case Kind.PG_CHECKPOINT:
            return Row("~", "postgres: CHECKPOINT (pg_control timeline is stale)")
        case Kind.COORD_ACQUIRE:
            return Row("+", "etcd: acquire the leader key at epoch {epoch}", payload=Acquisition)
        case Kind.COORD_RELEASE:
            return Row("-", "etcd: release the leader key")
        case Kind.COORD_PUBLISH:
            return Row("+", "etcd: publish {t} as the failover candidate")
        case Kind.COORD_WITHDRAW:
            return Row("-", "etcd: withdraw {t} as the failover candidate")
        case Kind.PG_SYNC_ON:
            return Row("~", "postgres: synchronous_standby_names = {t}")
        case Kind.PG_SYNC_OFF:
            return Row("~", "postgres: synchronous_standby_names = '' (commits stop waiting for the standby)")
        case Kind.WATCHDOG_ARM:
            return Row("+", "watchdog: arm")
        case Kind.WATCHDOG_DISARM:
            return Row("-", "watchdog: disarm")
        case Kind.AWAIT:
            return Row("?", "{t}: wait until its state can be read")
        case _:
            assert_never(kind)


_ROWS = {k: _row(k) for k in Kind}
