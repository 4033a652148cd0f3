"""Pydantic models of the desired-state YAML file (one file for the whole cluster).

The models only describe and check the shape and the values of one file; reading
the YAML with line numbers and turning pydantic's errors into `FILE:LINE:COL: key.path:
reason` lines is `reconciler.spec.load`.  Cross-field rules (primary names a node, no
two floating addresses overlap, ...) live here as model validators so that the JSON
Schema, the editor and the loader all agree on one definition.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# Linux IFNAMSIZ is 16 including the NUL; '/', ':' and whitespace are refused by the kernel
# or by iproute2, and "." / ".." are refused as names (by a validator: pydantic-core's regex
# engine has no look-ahead).
IFNAME_RE = r"^[A-Za-z0-9_.@-]{1,15}$"
UNIT_RE = r"^[A-Za-z0-9:_.@\\-]{1,255}$"

NodeName = Annotated[str, StringConstraints(pattern=NAME_RE)]


def _not_dots(v: str) -> str:
    if v in (".", ".."):
        raise ValueError(f"not a valid interface name: {v!r}")
    return v


IfName = Annotated[str, StringConstraints(pattern=IFNAME_RE), AfterValidator(_not_dots)]
ABS_PATH_RE = r"^/[^\x00]*$"
AbsPath = Annotated[str, StringConstraints(pattern=ABS_PATH_RE, max_length=4096)]


Loc = tuple[str | int, ...]


def loc_str(loc: Loc) -> str:
    """('floating_ips', 'addresses', 3) -> 'floating_ips.addresses[3]'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class SpecValueError(ValueError):
    """A cross-field error that knows the key path it belongs to (`loc`, below Spec), so
    that the loader can point at the right line; `str()` is "key.path: reason"."""

    def __init__(self, loc: Loc, reason: str) -> None:
        super().__init__(f"{loc_str(loc)}: {reason}")
        self.loc = loc
        self.reason = reason


def _unique(seen: dict[object, str], value: object, loc: Loc, what: str) -> None:
    if value in seen:
        raise SpecValueError(loc, f"duplicate {what} {str(value)!r} (already at {seen[value]})")
    seen[value] = loc_str(loc)


def _check_source(src: str, nodes: dict[str, Node]) -> None:
    if src == "primary" or src in nodes:
        return
    m = re.match(r"^[A-Za-z0-9.:\[\]-]+:(\d{1,5})$", src)
    if not m or not 1 <= int(m.group(1)) <= 65535:
        raise SpecValueError(
            ("postgres", "replication_source"), f"{src!r} is neither 'primary', a node name nor host:port"
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Node(_Strict):
    """One cluster node, keyed by its name (the host name without the domain)."""

    address: str = Field(description="IP address used for replication and for talking to the peer agent")

    @field_validator("address")
    @classmethod
    def _ip(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(f"not an IP address: {v!r}") from None
        return v


class AddressEntry(_Strict):
    """A floating address entry with its own interface."""

    address: str = Field(description="CIDR (192.0.2.10/24) or inclusive range (192.0.2.2-192.0.2.100/24)")
    interface: IfName | None = Field(default=None, description="overrides floating_ips.interface")


class FloatingIps(_Strict):
    """Addresses brought up on the Primary only; each entry is one host address with its prefix
    (like `ip addr add`) or an inclusive range; no address may appear twice."""

    interface: IfName | None = Field(default=None, description="default interface for the addresses")
    addresses: list[str | AddressEntry] = Field(
        default_factory=list, description="entries: 192.0.2.10/24, 192.0.2.2-192.0.2.100/24, or {address, interface}"
    )
    ips_file: AbsPath | None = Field(
        default=None, description="legacy /etc/hvmail_primary_ips format: one CIDR a line, # comments"
    )


class DrbdResource(_Strict):
    """A DRBD resource: Primary on the primary node, mounted there when `mount` is set."""

    name: NodeName
    device: AbsPath = Field(description="e.g. /dev/drbd0")
    mount: AbsPath | None = Field(default=None, description="mount point on the Primary")
    fstype: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.]{1,32}$")] = "ext4"
    options: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_=.,:/+-]{1,128}$")]] = Field(
        default_factory=list
    )


class Postgres(_Strict):
    """PostgreSQL: read-write on the primary, a hot standby streaming from it on the peer."""

    data_dir: AbsPath
    bin_dir: AbsPath = "/usr/lib/postgresql/15/bin"
    port: int = Field(default=5432, ge=1, le=65535)
    replication_user: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")] = "replicator"
    password_file: AbsPath | None = None
    socket_dir: AbsPath | None = Field(
        default=None,
        description="unix_socket_directories for this server, written to the config file reconciler owns "
        "(default: whatever postgresql.conf says)",
    )
    replication_source: str = Field(
        default="primary",
        description="'primary' (the spec's primary node), a node name, or an external host:port",
    )
    max_promotion_lag_bytes: int = Field(
        default=0,
        ge=0,
        description="bytes the standby may lack past the old primary's shutdown checkpoint for a planned promotion",
    )


class CommandSet(_Strict):
    """argv lists (the program an absolute path) to start, stop and check a service."""

    start: list[str] = Field(min_length=1)
    stop: list[str] = Field(min_length=1)
    status: list[str] = Field(min_length=1, description="exit 0 when running")

    @field_validator("start", "stop", "status")
    @classmethod
    def _abs(cls, v: list[str]) -> list[str]:
        if not v[0].startswith("/"):
            raise ValueError(f"the program must be an absolute path: {v[0]!r}")
        return v


class Service(_Strict):
    """A service run on the Primary only: a systemd unit, or the given `commands`."""

    name: Annotated[str, StringConstraints(pattern=UNIT_RE)]
    commands: CommandSet | None = Field(
        default=None, description="start/stop/status argv lists; without it the name is a systemd unit"
    )


class Announce(_Strict):
    """Gratuitous ARP / unsolicited neighbour advertisements after an address comes up."""

    count: int = Field(default=3, ge=0, le=100, description="gratuitous ARPs / unsolicited NAs per address")
    interval_ms: int = Field(default=200, ge=0, le=60_000)
    rate_limit_pps: int = Field(default=2000, ge=1, le=1_000_000, description="packets per second, all addresses")


class Agent(_Strict):
    """Settings of the reconciler agent running on each node."""

    drift_check_interval_s: float = Field(default=5.0, gt=0, le=3600)
    peer_port: int = Field(default=7170, ge=1, le=65535)
    peer_secret_file: AbsPath = "/etc/reconciler/peer.secret"
    metrics: bool = Field(
        default=False,
        description="serve Prometheus metrics, unauthenticated, as GET /metrics on the peer port",
    )


class Spec(_Strict):
    """The desired state of the whole cluster."""

    cluster: NodeName
    nodes: dict[NodeName, Node] = Field(min_length=1, max_length=2)
    primary: NodeName | Literal["none"] = Field(
        description="the node that is Primary, or none (maintenance: everything Secondary, no floating IPs)"
    )
    fenced: list[NodeName] = Field(
        default_factory=list,
        description=(
            "nodes the operator declares powered off or cut off: the other node may take over without "
            "their agreement, and whatever they wrote after the fork is discarded when they return"
        ),
    )
    floating_ips: FloatingIps = Field(default_factory=FloatingIps)
    drbd: list[DrbdResource] = Field(default_factory=list)
    postgres: Postgres | None = None
    services: list[Service] = Field(default_factory=list, description="start order; stopped in reverse")
    announce: Announce = Field(default_factory=Announce)
    agent: Agent = Field(default_factory=Agent)

    @model_validator(mode="after")
    def _cross(self) -> Spec:
        self._check_roles()
        seen: dict[object, str] = {}
        for name, node in self.nodes.items():
            _unique(seen, ipaddress.ip_address(node.address), ("nodes", name, "address"), "address")
        for field, attr in (("drbd", "name"), ("drbd", "device"), ("drbd", "mount"), ("services", "name")):
            seen = {}
            for i, item in enumerate(getattr(self, field)):
                if getattr(item, attr) is not None:
                    _unique(seen, getattr(item, attr), (field, i, attr), attr)
        if self.postgres is not None:
            _check_source(self.postgres.replication_source, self.nodes)
        return self

    def _check_roles(self) -> None:
        if self.primary != "none" and self.primary not in self.nodes:
            raise SpecValueError(("primary",), f"{self.primary!r} is not one of the nodes ({', '.join(self.nodes)})")
        seen: dict[object, str] = {}
        for i, n in enumerate(self.fenced):
            if n not in self.nodes:
                raise SpecValueError(("fenced", i), f"{n!r} is not one of the nodes ({', '.join(self.nodes)})")
            if n == self.primary:
                raise SpecValueError(("fenced", i), f"{n!r} cannot be fenced and primary at once")
            _unique(seen, n, ("fenced", i), "node")

    def peer_of(self, node: str) -> str | None:
        others = [n for n in self.nodes if n != node]
        return others[0] if others else None
