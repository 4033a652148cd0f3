"""Observed state of one node: plain, frozen, JSON-round-trippable data.

A `NodeObservation` is what the drivers in `reconciler.observe` read from the real
system (netlink, drbdsetup, PostgreSQL, /proc/self/mountinfo, the service manager)
and what the planner reads.  Nothing in it is remembered by the agent: every field can
be recomputed by observing again.  Snapshots are saved with `reconciler status --json`
and fed back with `reconciler plan --observed FILE`, read by `parse_snapshot`: at most
`MAX_SNAPSHOT_BYTES`, UTF-8 with or without a BOM, `format` 1, and every problem one
`FILE:LINE:COL: key.path: reason` line (`SnapshotError`) that never quotes the file.
"""

from __future__ import annotations

import json
import re
from operator import attrgetter
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, ValidationError, field_validator
from pydantic_core import CoreSchema, core_schema

from reconciler import address
from reconciler.address import Address

SNAPSHOT_FORMAT = 1
# A snapshot with 10,000 floating addresses (`status --json`, indented) is 1.1 MB (IPv4) to
# 1.3 MB (IPv6): 10 MiB is 8x that, and is refused after reading 10 MiB, in milliseconds
# (a 52 MB file used to take 10 s and 800 MB of memory to parse).
MAX_SNAPSHOT_BYTES = 10 << 20

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
        raise ValueError("not an LSN (expected like 0/30391A0)")
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
    # Synchronous replication (automatic failover): the standbys a commit waits for
    # (synchronous_standby_names, parsed; () = none), and those pg_stat_replication shows
    # `sync` now (application_name, which is the node's name).
    sync_names: tuple[str, ...] = ()
    sync_standbys: tuple[str, ...] = ()
    streaming_standbys: tuple[str, ...] = ()  # pg_stat_replication: state streaming
    standby_flush: dict[str, str] = {}  # pg_stat_replication: flush_lsn by application_name

    @field_validator("standby_flush")
    @classmethod
    def _flush_lsns(cls, v: dict[str, str]) -> dict[str, str]:
        for lsn in v.values():
            _check_lsn(lsn)
        return v

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


class CoordObs(_Frozen):
    """Leadership in automatic failover mode (None in manual mode): what etcd showed in this
    observation, what the lease keeper reports, and what the agent remembers (its state file).

    Every etcd value is from one linearizable read; when etcd could not answer, `reachable`
    is False and those fields are None: unknown, never "nobody".
    """

    reachable: bool = False
    error: str | None = None  # why etcd could not be read (one line, no secret)
    epoch: int | None = None  # the last epoch etcd handed out (0: never)
    leader: str | None = None  # node holding the leader key; None: nobody (when reachable)
    leader_epoch: int | None = None
    leader_lease: int | None = None  # the lease that carries the leader key
    candidate: str | None = None  # the standby the holder declared fit to take over
    candidate_epoch: int | None = None
    remembered_epoch: int = 0  # the highest epoch this agent has ever seen: etcd must not show less
    held_epoch: int | None = None  # the epoch this node acquired and believes it still holds
    held_lease: int | None = None  # the lease that carries that leader key
    held_revision: str | None = None  # the spec revision this node applied when it acquired
    lease: int | None = None  # the keeper's lease now
    since_renewal_s: float | None = None  # since the send time of its last answered keepalive
    watchdog_armed: bool = False
    # The last acquisition as etcd recorded it (for people: status, metrics, hooks):
    last_node: str | None = None
    last_epoch: int | None = None
    last_at: float | None = None  # Unix time (wall clock of the acquiring node)
    last_why: str | None = None


class NodeObservation(_Frozen):
    """Everything the planner needs to know about one node, at one moment."""

    format: int = Field(default=SNAPSHOT_FORMAT)

    @field_validator("format")
    @classmethod
    def _format(cls, v: int) -> int:
        if v != SNAPSHOT_FORMAT:
            raise ValueError(f"unsupported snapshot format (this version reads format {SNAPSHOT_FORMAT})")
        return v

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
    coord: CoordObs | None = None  # automatic failover mode only
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


class SnapshotError(Exception):
    """A problem in a saved snapshot, as `FILE:LINE:COL: key.path: reason` (like spec errors)."""

    def __init__(self, file: str, line: int, col: int, key: str, reason: str) -> None:
        self.file, self.line, self.col, self.key = file, line, col, key
        self.reason = " ".join(reason.split())
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.key}: {self.reason}"


def parse_snapshot(data: bytes, path: str) -> NodeObservation:
    """The snapshot in `data` (the bytes of the file `path`), or a SnapshotError."""
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise SnapshotError(path, 1, 1, "(file)", f"larger than the {MAX_SNAPSHOT_BYTES >> 20} MiB limit for a snapshot")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SnapshotError(path, line, col, "(file)", f"not valid UTF-8 (byte 0x{data[e.start]:02x})") from None
    try:
        return NodeObservation.model_validate_json(text)
    except ValidationError as e:
        raise _snapshot_error(e, text, path) from None


_JSON_AT = re.compile(r"^(.*) at line (\d+) column (\d+)$")
_SHOWN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
          "list": "a list", "tuple": "a list", "dict": "an object", "model": "an object",
          "model_attributes": "an object"}


def _snapshot_error(exc: ValidationError, text: str, path: str) -> SnapshotError:
    err = exc.errors(include_url=False)[0]
    t, loc, ctx = err["type"], tuple(err["loc"]), err.get("ctx") or {}
    if t == "json_invalid":  # "expected value at line 1 column 5": jiter's words, no input quoted
        m = _JSON_AT.match(str(ctx.get("error", "")))
        if m:
            line, col = int(m.group(2)), max(1, int(m.group(3)))
            return SnapshotError(path, line, col, "(file)", f"invalid JSON: {m.group(1)}")
        return SnapshotError(path, 1, 1, "(file)", "invalid JSON")
    key = _loc_str(loc)
    line, col = _position(text, loc)
    kind = t.rsplit("_", 1)[0]
    if t == "missing":
        reason = "required key is missing"
    elif t == "extra_forbidden":
        reason = "unknown key"
    elif t == "value_error":
        reason = str(ctx.get("error", "invalid value"))  # ours, and they never quote the value
    elif t == "finite_number":
        reason = "expected a finite number"
    elif t == "literal_error":
        reason = f"expected {ctx.get('expected')}"
    elif t.endswith(("_type", "_parsing")) and kind in _KINDS:
        reason = f"expected {_KINDS[kind]}"
    else:
        reason = f"invalid value ({t})"
    return SnapshotError(path, line, col, key or "(file)", reason)


def _loc_str(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            part = part if _SHOWN_KEY.fullmatch(str(part)) else "<key>"
            out += f".{part}" if out else part
    return out


_WS = re.compile(r"[ \t\n\r]*")


def _ws(text: str, pos: int) -> int:
    m = _WS.match(text, pos)
    return m.end() if m else pos


def _position(text: str, loc: tuple[Any, ...]) -> tuple[int, int]:
    """1-based line and column of the value at `loc` (of the deepest part found; a missing
    key: its object), walking the JSON text and skipping other values with the C decoder.
    Only run for an error, so the cost (one pass at most) does not matter."""
    decoder = json.JSONDecoder()
    pos = found = _ws(text, 0)
    try:
        for part in loc:
            if isinstance(part, int) and text.startswith("[", pos):
                pos = _ws(text, pos + 1)
                for _ in range(part):
                    _, pos = decoder.raw_decode(text, pos)
                    pos = _ws(text, _ws(text, pos) + 1)  # past the ','
            elif isinstance(part, str) and text.startswith("{", pos):
                pos = _ws(text, pos + 1)
                while True:
                    key, pos = decoder.raw_decode(text, pos)
                    pos = _ws(text, _ws(text, pos) + 1)  # past the ':'
                    if key == part:
                        break
                    _, pos = decoder.raw_decode(text, pos)
                    pos = _ws(text, pos)
                    if not text.startswith(",", pos):
                        raise ValueError("not found")
                    pos = _ws(text, pos + 1)
            else:
                break
            found = pos
    except (ValueError, RecursionError, IndexError):
        pass
    line = text.count("\n", 0, found) + 1
    return line, found - (text.rfind("\n", 0, found) + 1) + 1
