"""Pydantic models of the desired-state YAML file (one file for the whole cluster).

The models only describe and check the shape and the values of one file; reading
the YAML with line numbers and turning pydantic's errors into `FILE:LINE:COL: key.path:
reason` lines is `reconciler.spec.load`.  Cross-field rules (primary names a node, no
two floating addresses overlap, ...) live here as model validators so that the JSON
Schema, the editor and the loader all agree on one definition.

Every string that reaches an external command, a conninfo string or a config file is
checked here: names are patterns that cannot start with '-' (no option injection), paths
are absolute and hold no control character (C0 or DEL: a newline or a NUL in a data_dir
would add conninfo options or config lines).  Error messages never quote the value: the
loader points at it by FILE:LINE:COL, and the file may be one the user must not read.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from reconciler.spec.failover import Failover

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# Linux IFNAMSIZ is 16 including the NUL; '/', ':' and whitespace are refused by the kernel
# or by iproute2, and "." / ".." are refused as names (by a validator: pydantic-core's regex
# engine has no look-ahead).
# A leading '-' would read as an option to ip/arping/... (Linux itself allows it).
IFNAME_RE = r"^[A-Za-z0-9_.@][A-Za-z0-9_.@-]{0,14}$"
# systemd's unit name characters; never starting with '-' (`--now` is an option to
# systemctl, and '-.mount'/'-.slice' are the root units), ':' or '.'; see _unit_name.
UNIT_RE = r"^[A-Za-z0-9_\\][A-Za-z0-9:_.@\\-]{0,254}$"
FSTYPE_RE = r"^[a-z0-9_.]{1,32}$"
MOUNT_OPT_RE = r"^[A-Za-z0-9_][A-Za-z0-9_=.,:/+-]{0,127}$"
PG_USER_RE = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
CONTROL_CHARS = frozenset(map(chr, [*range(0x20), 0x7F]))

NodeName = Annotated[str, StringConstraints(pattern=NAME_RE)]


def _not_dots(v: str) -> str:
    if v in (".", ".."):
        raise ValueError("not a valid interface name ('.' and '..' are refused by Linux)")
    return v


def _unit_name(v: str) -> str:
    if "@." in v or v.endswith("@"):
        raise ValueError("a template unit (name@.service) cannot be started: give the instance (name@inst.service)")
    return v


IfName = Annotated[str, StringConstraints(pattern=IFNAME_RE), AfterValidator(_not_dots)]
ABS_PATH_RE = r"^/[^\x00-\x1f\x7f]*$"
AbsPath = Annotated[str, StringConstraints(pattern=ABS_PATH_RE, max_length=4096)]


Loc = tuple[str | int, ...]


_SHOWN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")


def loc_str(loc: Loc) -> str:
    """('floating_ips', 'addresses', 3) -> 'floating_ips.addresses[3]'.  A key that is not a
    plain name (a space, a quote, a colon, a control character, 65+ characters, ...) is shown as
    <key>: the line and column point at it, and the message stays one line."""
    out = ""
    for part in loc:
        if not isinstance(part, int) and not _SHOWN_KEY.fullmatch(part):
            part = "<key>"
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# Validation context key: check an automatic spec completely but do not refuse it for not being
# runnable yet (the simulated cluster plans with it; nothing loads a file with it).
PLAN_ONLY = "plan_only"


class SpecValueError(ValueError):
    """A cross-field error that knows the key path it belongs to (`loc`, below Spec), so
    that the loader can point at the right line; `str()` is "key.path: reason"."""

    def __init__(self, loc: Loc, reason: str) -> None:
        super().__init__(f"{loc_str(loc)}: {reason}")
        self.loc = loc
        self.reason = reason


def _unique(seen: dict[object, str], value: object, loc: Loc, what: str) -> None:
    if value in seen:
        raise SpecValueError(loc, f"duplicate {what} (the same as {seen[value]})")
    seen[value] = loc_str(loc)


def _check_source(src: str, nodes: dict[str, Node]) -> None:
    if src == "primary" or src in nodes:
        return
    # fullmatch: '$' would also match before a trailing newline (a conninfo injection)
    m = re.fullmatch(r"[A-Za-z0-9.:\[\]][A-Za-z0-9.:\[\]-]*:(\d{1,5})", src)
    if not m or not 1 <= int(m.group(1)) <= 65535:
        raise SpecValueError(
            ("postgres", "replication_source"), "neither 'primary', a node name nor host:port (host not starting with '-')"
        )


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Node(_Strict):
    """One cluster node, keyed by its name (the host name without the domain)."""

    address: str = Field(description="IP address used for replication and for talking to the peer agent")

    @field_validator("address")
    @classmethod
    def _ip(cls, v: str) -> str:
        """The peer server binds this address and the peer connects to it: a wildcard or
        group address can only be a mistake.  Loopback is allowed (tests run two agents on
        one host); link-local IPv6 is refused for want of a zone."""
        try:
            ip = ipaddress.ip_address(v)
        except ValueError:
            raise ValueError("not an IP address (e.g. 192.0.2.1 or 2001:db8::1)") from None
        if ip.is_unspecified:
            raise ValueError("the unspecified address (0.0.0.0, ::) would make the peer server listen on every "
                             "interface; give this node's own address")
        if ip.is_multicast:
            raise ValueError("a multicast address cannot be a node's address")
        if ip == ipaddress.IPv4Address("255.255.255.255"):
            raise ValueError("the limited broadcast address cannot be a node's address")
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id is not None or ip.is_link_local:
                raise ValueError("a link-local IPv6 address needs a zone, which a node address cannot carry")
            if ip.ipv4_mapped is not None:
                raise ValueError("an IPv4-mapped IPv6 address (::ffff:a.b.c.d): write the IPv4 address")
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
    fstype: Annotated[str, StringConstraints(pattern=FSTYPE_RE)] = "ext4"
    options: list[Annotated[str, StringConstraints(pattern=MOUNT_OPT_RE)]] = Field(
        default_factory=list
    )


class Postgres(_Strict):
    """PostgreSQL: read-write on the primary, a hot standby streaming from it on the peer."""

    data_dir: AbsPath
    bin_dir: AbsPath = "/usr/lib/postgresql/15/bin"
    port: int = Field(default=5432, ge=1, le=65535)
    replication_user: Annotated[str, StringConstraints(pattern=PG_USER_RE)] = "replicator"
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
    synchronous: bool = Field(
        default=False,
        description="the primary waits for the standby to confirm each commit (required by failover.mode: automatic)",
    )


class CommandSet(_Strict):
    """argv lists (the program an absolute path) to start, stop and check a service."""

    start: list[str] = Field(min_length=1)
    stop: list[str] = Field(min_length=1)
    status: list[str] = Field(min_length=1, description="exit 0 when running")

    @field_validator("start", "stop", "status")
    @classmethod
    def _abs(cls, v: list[str]) -> list[str]:
        """The program: an absolute path without control characters.  Its arguments may hold
        a tab or a newline (a `sh -c` script), never a NUL nor another control character."""
        if not v[0].startswith("/"):
            raise ValueError("the program must be an absolute path")
        if CONTROL_CHARS.intersection(v[0]):
            raise ValueError("the program path contains a control character")
        for arg in v[1:]:
            if CONTROL_CHARS.difference("\t\n").intersection(arg):
                raise ValueError("an argument contains a control character (other than tab or newline)")
        return v


class Service(_Strict):
    """A service run on the Primary only: a systemd unit, or the given `commands`."""

    name: Annotated[str, StringConstraints(pattern=UNIT_RE), AfterValidator(_unit_name)]
    commands: CommandSet | None = Field(
        default=None, description="start/stop/status argv lists; without it the name is a systemd unit"
    )


class Announce(_Strict):
    """Gratuitous ARP / unsolicited neighbour advertisements after an address comes up."""

    count: int = Field(default=3, ge=0, le=100, description="gratuitous ARPs / unsolicited NAs per address")
    interval_ms: int = Field(default=200, ge=0, le=60_000)
    rate_limit_pps: int = Field(default=2000, ge=1, le=1_000_000, description="packets per second, all addresses")


def _hook_argv(argv: list[str]) -> list[str]:
    if not re.fullmatch(ABS_PATH_RE, argv[0]):
        raise ValueError("a hook's program (its first word) must be an absolute path")
    if any(CONTROL_CHARS.intersection(word) for word in argv):
        raise ValueError("a hook's argv cannot hold control characters")
    return argv


HookArgv = Annotated[list[Annotated[str, StringConstraints(max_length=4096)]], Field(min_length=1, max_length=64),
                     AfterValidator(_hook_argv)]


class Hooks(_Strict):
    """Programs the agent runs when something happens that a person should hear of.  Each is an
    argv list (no shell) whose program is an absolute path to a file only root can change; it runs
    in the background with `timeout_s`, the facts in RECONCILER_* environment variables (see
    docs/operating.md), and its exit status is logged; it never delays or changes what the agent does."""

    role_change: list[HookArgv] = Field(
        default_factory=list, description="after this node converged in another role (primary <-> secondary)")
    operator_needed: list[HookArgv] = Field(
        default_factory=list, description="once when the agent starts waiting on the operator "
        "(split brain, re-clone, fencing, a refused action)")
    failover: list[HookArgv] = Field(
        default_factory=list, description="automatic failover: after this node took the leader key over at a "
        "new epoch (a takeover or a planned switchover), and after it demoted itself because it lost the key")
    timeout_s: float = Field(default=30.0, gt=0, le=3600)


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
    failover: Failover = Field(default_factory=Failover)
    hooks: Hooks = Field(default_factory=Hooks)

    @model_validator(mode="after")
    def _cross(self, info: ValidationInfo) -> Spec:
        self._check_roles()
        self._check_failover(plan_only=bool(info.context and info.context.get(PLAN_ONLY)))
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
            raise SpecValueError(("primary",), f"not one of the nodes ({', '.join(self.nodes)}) nor 'none'")
        seen: dict[object, str] = {}
        for i, n in enumerate(self.fenced):
            if n not in self.nodes:
                raise SpecValueError(("fenced", i), f"not one of the nodes ({', '.join(self.nodes)})")
            if n == self.primary:
                raise SpecValueError(("fenced", i), "the primary node cannot be fenced too")
            _unique(seen, n, ("fenced", i), "node")

    def _check_failover(self, plan_only: bool = False) -> None:
        from reconciler.spec.failover_check import check_failover  # it imports this module

        check_failover(self, plan_only)

    def etcd_members(self) -> dict[str, str]:
        """Member name -> address: both nodes and the witness (automatic mode)."""
        members = {name: n.address for name, n in self.nodes.items()}
        if self.failover.witness is not None:
            members[self.failover.witness.name] = self.failover.witness.address
        return members

    def etcd_endpoints(self) -> list[str]:
        e = self.failover.etcd
        if e.endpoints:
            return list(e.endpoints)
        scheme = "https" if e.ca_file else "http"
        return [f"{scheme}://{_url_host(addr)}:{e.client_port}" for addr in self.etcd_members().values()]

    def etcd_prefix(self) -> str:
        return self.failover.etcd.prefix or f"/reconciler/{self.cluster}"

    def peer_of(self, node: str) -> str | None:
        others = [n for n in self.nodes if n != node]
        return others[0] if others else None
