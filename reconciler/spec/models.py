"""Pydantic models of the desired-state YAML file (one file for the whole cluster).

The models only describe and check the shape and the values of one file; reading
the YAML with line numbers and turning pydantic's errors into `FILE:LINE:COL: key.path:
reason` lines is `reconciler.spec.load`.  Cross-field rules (primary names a node, no
two floating addresses overlap, ...) live here as model validators so that the JSON
Schema, the editor and the loader all agree on one definition.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# Linux IFNAMSIZ is 16 including the NUL; '/', ':' and whitespace are refused by the kernel
# or by iproute2, and "." / ".." are refused as names.
IFNAME_RE = r"^(?!\.\.?$)[A-Za-z0-9_.@-]{1,15}$"
UNIT_RE = r"^[A-Za-z0-9:_.@\\-]{1,255}$"

NodeName = Annotated[str, StringConstraints(pattern=NAME_RE)]
IfName = Annotated[str, StringConstraints(pattern=IFNAME_RE)]
AbsPath = Annotated[str, StringConstraints(pattern=r"^/[^\x00]*$", max_length=4096)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Node(_Strict):
    address: str = Field(description="IP address used for replication and for talking to the peer agent")

    @field_validator("address")
    @classmethod
    def _ip(cls, v: str) -> str:
        import ipaddress

        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(f"not an IP address: {v!r}") from None
        return v


class AddressEntry(_Strict):
    address: str = Field(description="CIDR (192.0.2.10/24) or inclusive range (192.0.2.2-192.0.2.100/24)")
    interface: IfName | None = Field(default=None, description="overrides floating_ips.interface")


class FloatingIps(_Strict):
    interface: IfName | None = Field(default=None, description="default interface for the addresses")
    addresses: list[str | AddressEntry] = Field(default_factory=list)
    ips_file: AbsPath | None = Field(
        default=None, description="legacy /etc/hvmail_primary_ips format: one CIDR a line, # comments"
    )


class DrbdResource(_Strict):
    name: NodeName
    device: AbsPath = Field(description="e.g. /dev/drbd0")
    mount: AbsPath | None = Field(default=None, description="mount point on the Primary")
    fstype: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.]{1,32}$")] = "ext4"
    options: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_=.,:/+-]{1,128}$")]] = Field(
        default_factory=list
    )


class Postgres(_Strict):
    data_dir: AbsPath
    bin_dir: AbsPath = "/usr/lib/postgresql/15/bin"
    port: int = Field(default=5432, ge=1, le=65535)
    replication_user: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")] = "replicator"
    password_file: AbsPath | None = None
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
    name: Annotated[str, StringConstraints(pattern=UNIT_RE)]
    commands: CommandSet | None = Field(
        default=None, description="start/stop/status argv lists; without it the name is a systemd unit"
    )


class Announce(_Strict):
    count: int = Field(default=3, ge=0, le=100, description="gratuitous ARPs / unsolicited NAs per address")
    interval_ms: int = Field(default=200, ge=0, le=60_000)
    rate_limit_pps: int = Field(default=2000, ge=1, le=1_000_000, description="packets per second, all addresses")


class Agent(_Strict):
    drift_check_interval_s: float = Field(default=5.0, gt=0, le=3600)
    peer_port: int = Field(default=7170, ge=1, le=65535)
    peer_secret_file: AbsPath = "/etc/reconciler/peer.secret"


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
    def _cross(self) -> "Spec":
        if self.primary != "none" and self.primary not in self.nodes:
            raise ValueError(f"primary: {self.primary!r} is not one of the nodes ({', '.join(self.nodes)})")
        for n in self.fenced:
            if n not in self.nodes:
                raise ValueError(f"fenced: {n!r} is not one of the nodes")
            if n == self.primary:
                raise ValueError(f"fenced: {n!r} cannot be fenced and primary at once")
        if len(set(self.fenced)) != len(self.fenced):
            raise ValueError("fenced: a node is listed twice")
        addrs = [n.address for n in self.nodes.values()]
        if len(set(addrs)) != len(addrs):
            raise ValueError("nodes: two nodes share an address")
        for field, items in (("drbd", [r.name for r in self.drbd]), ("services", [s.name for s in self.services])):
            if len(set(items)) != len(items):
                raise ValueError(f"{field}: a name is listed twice")
        mounts = [r.mount for r in self.drbd if r.mount]
        if len(set(mounts)) != len(mounts):
            raise ValueError("drbd: two resources share a mount point")
        if self.postgres is not None:
            src = self.postgres.replication_source
            if src != "primary" and src not in self.nodes and not re.match(r"^[A-Za-z0-9.:\[\]-]+:\d{1,5}$", src):
                raise ValueError(
                    f"postgres.replication_source: {src!r} is neither 'primary', a node name nor host:port"
                )
        return self

    def peer_of(self, node: str) -> str | None:
        others = [n for n in self.nodes if n != node]
        return others[0] if others else None
