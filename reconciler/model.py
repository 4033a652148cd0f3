"""Observed state of one node: plain, frozen, JSON-round-trippable data.

A `NodeObservation` is what the drivers in `reconciler.observe` read from the real
system (netlink, drbdsetup, PostgreSQL, /proc/self/mountinfo, the service manager)
and what the planner reads.  Nothing in it is remembered by the agent: every field can
be recomputed by observing again.  Snapshots are saved with `reconciler status --json`
and fed back with `reconciler plan --observed FILE`.
"""

from __future__ import annotations

import re
from operator import attrgetter
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, field_validator
from pydantic_core import CoreSchema, core_schema

from reconciler import address
from reconciler.address import Address

SNAPSHOT_FORMAT = 1

_LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")


def lsn_to_int(lsn: str) -> int:
    """'0/30391A0' -> 50565536.  PostgreSQL prints LSNs as two hex halves."""
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def int_to_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_lsn(value: str | None) -> str | None:
    if value is not None and not _LSN_RE.match(value):
        raise ValueError(f"not an LSN (expected like 0/30391A0): {value!r}")
    return value


class _AsText:
    """An `Address` field: kept typed in Python, read from and written as its canonical
    text ("10.1.0.5/24") in JSON, so snapshots and the peer's answers stay text."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from_text = core_schema.no_info_after_validator_function(address.parse, core_schema.str_schema())
        return core_schema.json_or_python_schema(
            json_schema=from_text,
            python_schema=core_schema.union_schema([core_schema.is_instance_schema(Address), from_text]),
            serialization=core_schema.plain_serializer_function_ser_schema(attrgetter("text")),
        )


class AddressObs(_Frozen):
    """One address on an interface, identified by (interface, address, prefix)."""

    address: Annotated[Address, _AsText]  # 10.1.0.5/24 or 2001:db8::5/64 (as text in JSON)
    owned: bool  # carries this tool's IFA_PROTO tag
    secondary: bool = False  # IPv4 IFA_F_SECONDARY: dropped with its subnet's primary


class InterfaceObs(_Frozen):
    exists: bool = True
    up: bool = True
    promote_secondaries: bool | None = None  # None: not applicable / unknown
    addresses: tuple[AddressObs, ...] = ()


DrbdRole = Literal["Primary", "Secondary", "Unknown"]


class DrbdObs(_Frozen):
    """One DRBD resource (single volume) as `drbdsetup sh-status` / events2 show it."""

    configured: bool  # resource is up in the kernel (minor allocated, disk attached or not)
    role: DrbdRole = "Secondary"
    peer_role: DrbdRole = "Unknown"
    connection: str = "StandAlone"  # 8.4 cstate: Connected, WFConnection, StandAlone, SyncSource ...
    disk: str = "Diskless"  # UpToDate, Outdated, Inconsistent, Consistent, DUnknown, Diskless ...
    peer_disk: str = "DUnknown"
    open: bool | None = None  # device held open (mounted or opened by a process); None if unknown
    split_brain: bool = False  # the kernel reported an unresolved split brain on this resource


class WalReceiverObs(_Frozen):
    status: str  # streaming, waiting, starting, ...
    sender_host: str | None = None
    sender_port: int | None = None
    received_tli: int | None = None


class TimelineSwitch(_Frozen):
    """One line of a timeline history file: timeline `parent` ended at `switchpoint`."""

    parent: int
    switchpoint: str

    @field_validator("switchpoint")
    @classmethod
    def _lsn(cls, v: str) -> str | None:
        return _check_lsn(v)


class PostgresObs(_Frozen):
    """PostgreSQL as seen over SQL when running, and through pg_controldata when not."""

    running: bool
    in_recovery: bool | None = None
    timeline: int | None = None
    # pg_control_checkpoint().timeline_id: lags `timeline` right after promotion until
    # the first checkpoint; pg_rewind against this server needs them equal.
    control_timeline: int | None = None
    current_lsn: str | None = None  # primary: pg_current_wal_flush_lsn()
    receive_lsn: str | None = None  # standby: pg_last_wal_receive_lsn()
    replay_lsn: str | None = None  # standby: pg_last_wal_replay_lsn()
    wal_receiver: WalReceiverObs | None = None
    replay_paused: bool | None = None
    # pg_controldata, filled whenever the data directory is readable:
    cluster_state: str | None = None  # "shut down", "shut down in recovery", "in production", ...
    checkpoint_lsn: str | None = None  # Latest checkpoint location (start of the record)
    checkpoint_end_lsn: str | None = None  # end of that record (pg_waldump), for clean shutdowns
    checkpoint_timeline: int | None = None
    system_identifier: str | None = None
    rewind_possible: bool | None = None  # wal_log_hints=on or data checksums
    standby_signal: bool = False  # standby.signal present: the next start is a standby
    conninfo_host: str | None = None  # primary_conninfo in the file this tool owns
    conninfo_port: int | None = None
    history: tuple[TimelineSwitch, ...] = ()  # this server's timeline history (primary)
    data_dir_empty: bool = False

    @field_validator(
        "current_lsn", "receive_lsn", "replay_lsn", "checkpoint_lsn", "checkpoint_end_lsn"
    )
    @classmethod
    def _lsn(cls, v: str | None) -> str | None:
        return _check_lsn(v)


class MountObs(_Frozen):
    source: str
    fstype: str
    options: tuple[str, ...] = ()


class ServiceObs(_Frozen):
    active: bool
    failed: bool = False


class NodeObservation(_Frozen):
    """Everything the planner needs to know about one node, at one moment."""

    format: int = Field(default=SNAPSHOT_FORMAT)
    node: str
    spec_digest: str | None = None  # digest of the spec this node's agent last applied
    revision: str | None = None  # git commit of that spec (None: not read from git)
    # Who that spec makes Primary and fenced ("primary=mx2 fenced=none"); the planner's
    # revision-agreement guard compares it with its own.  None: unknown, never blocks.
    spec_roles: str | None = None
    interfaces: dict[str, InterfaceObs] = {}
    drbd: dict[str, DrbdObs] = {}
    mounts: dict[str, MountObs] = {}  # mount point -> what is mounted there
    postgres: PostgresObs | None = None
    services: dict[str, ServiceObs] = {}
    # What could not be observed, one "<part>: <reason>" line each (see `failure`): that
    # part above is then left at its "unknown" value, which the planner must not read as fact.
    errors: tuple[str, ...] = ()

    @staticmethod
    def failure(part: str, e: BaseException | str) -> str:
        """The `errors` line for a driver `part` (net, drbd, mounts, postgres, services)."""
        return f"{part}: {e}".splitlines()[0][:500]

    def failed_parts(self) -> dict[str, str]:
        """part -> its first failure's reason, read back from `errors`."""
        out: dict[str, str] = {}
        for e in self.errors:
            part, _, reason = e.partition(": ")
            out.setdefault(part, reason)
        return out

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> NodeObservation:
        return cls.model_validate_json(text)
