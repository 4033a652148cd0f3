"""The `failover:` section: manual (the default: a person edits `primary:`) or automatic on etcd.

In automatic mode the effective Primary is the holder of a leader key bound to an etcd lease;
three etcd members (one per node, one on the witness) decide, never a consensus of our own.
The timing relations every automatic spec must satisfy (all on the local monotonic clock, counted
from the *send* time of the last successful renewal, so the server's expiry can only come later):

    renew_interval_s + request_timeout_s  <=  demote_after_s     (one failed renewal is not a demotion)
    demote_after_s + demotion_budget_s    <=  watchdog.timeout_s (the demotion gets its whole budget)
    watchdog.timeout_s + SAFETY_MARGIN_S  <=  lease_ttl_s        (the node is reset before the lease can expire)

With `watchdog: off` the last relation is checked with demote_after_s + demotion_budget_s in
place of the watchdog timeout: nothing then resets a node whose demotion hangs, which `status`
says loudly.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# etcd keys under this prefix; a path-like name without control characters or spaces
PREFIX_RE = r"^/[A-Za-z0-9_.\-/]{1,200}$"
ENDPOINT_RE = r"^https?://[A-Za-z0-9.\-\[\]:]{1,253}:\d{1,5}$"
USER_RE = r"^[A-Za-z0-9_.@-]{1,64}$"
ABS_PATH_RE = r"^/[^\x00-\x1f\x7f]*$"
AbsPath = Annotated[str, StringConstraints(pattern=ABS_PATH_RE, max_length=4096)]

# How much earlier than the lease's expiry (server side) the watchdog must have reset a node that
# stopped renewing: the server counts the TTL from when it handled the keepalive, the node from
# when it sent it, and an isolated etcd leader was measured answering keepalives for ~1.7 s after
# it lost its quorum (reference: automatic-failover.md, section 4).
SAFETY_MARGIN_S = 2.0
DEFAULT_CLIENT_PORT = 2379
DEFAULT_PEER_PORT = 2380


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Witness(_Strict):
    """The third etcd member: a small machine that holds no data and never becomes Primary."""

    name: Annotated[str, StringConstraints(pattern=NAME_RE)]
    address: str = Field(description="IP address of the witness's etcd member")

    @field_validator("address")
    @classmethod
    def _ip(cls, v: str) -> str:
        try:
            ip = ipaddress.ip_address(v)
        except ValueError:
            raise ValueError("not an IP address (e.g. 192.0.2.3 or 2001:db8::3)") from None
        if ip.is_unspecified or ip.is_multicast:
            raise ValueError("the witness needs its own unicast address")
        return v


class Etcd(_Strict):
    """How the agents reach etcd; the members' own configuration is printed by `reconciler etcd-config`."""

    endpoints: list[Annotated[str, StringConstraints(pattern=ENDPOINT_RE)]] = Field(
        default_factory=list,
        description="client URLs; default: http(s)://ADDRESS:client_port of both nodes and the witness",
    )
    prefix: Annotated[str, StringConstraints(pattern=PREFIX_RE)] | None = Field(
        default=None, description="keys of this cluster live below it; default /reconciler/CLUSTER"
    )
    client_port: int = Field(default=DEFAULT_CLIENT_PORT, ge=1, le=65535)
    peer_port: int = Field(default=DEFAULT_PEER_PORT, ge=1, le=65535)
    data_dir: AbsPath = Field(default="/var/lib/etcd/reconciler",
                              description="each member's data directory (never on DRBD: etcd needs a fast local disk)")
    ca_file: AbsPath | None = Field(default=None, description="CA of the members' certificates (https endpoints)")
    cert_file: AbsPath | None = Field(default=None, description="client certificate (root-only)")
    key_file: AbsPath | None = Field(default=None, description="client key (root-only)")
    username: Annotated[str, StringConstraints(pattern=USER_RE)] | None = None
    password_file: AbsPath | None = Field(default=None, description="root-only file holding the etcd password")
    request_timeout_s: float = Field(default=2.0, gt=0, le=30)


class Watchdog(_Strict):
    """A hardware or softdog watchdog that resets the node when the agent stops feeding it."""

    device: AbsPath = "/dev/watchdog"
    timeout_s: int = Field(default=15, ge=1, le=600, description="armed before promotion, fed only after a renewal")


class Failover(_Strict):
    """manual (default): the spec's `primary:` is the Primary, as always.  automatic: the holder of
    the etcd leader key is; `primary:` is the preferred Primary (a new revision naming another node
    is a planned switchover)."""

    mode: Literal["manual", "automatic"] = "manual"
    witness: Witness | None = None
    etcd: Etcd = Field(default_factory=Etcd)
    lease_ttl_s: int = Field(default=30, ge=2, le=600, description="the leader key's lease, as etcd counts it")
    renew_interval_s: float = Field(default=2.0, gt=0, le=60)
    demote_after_s: float = Field(default=6.0, gt=0, le=600,
                                  description="without a renewal for this long, the holder starts demoting itself")
    demotion_budget_s: float = Field(default=7.0, gt=0, le=600,
                                     description="time a self-demotion may take (services, PostgreSQL, DRBD)")
    watchdog: Watchdog | Literal["off"] = Field(default_factory=Watchdog)

    def timing_errors(self) -> list[tuple[tuple[str, ...], str]]:
        """(key path below `failover`, reason) for each timing relation that does not hold."""
        errors: list[tuple[tuple[str, ...], str]] = []
        renew = self.renew_interval_s + self.etcd.request_timeout_s
        if renew > self.demote_after_s:
            errors.append((("demote_after_s",), f"must be at least renew_interval_s + etcd.request_timeout_s "
                           f"({renew:g} s): one slow renewal must not start a demotion"))
        demoted_by = self.demote_after_s + self.demotion_budget_s
        if self.watchdog != "off":
            if demoted_by > self.watchdog.timeout_s:
                errors.append((("watchdog", "timeout_s"), f"must be at least demote_after_s + demotion_budget_s "
                               f"({demoted_by:g} s): the watchdog would reset the node in the middle of its demotion"))
            last, what = float(self.watchdog.timeout_s), "watchdog.timeout_s"
        else:
            last, what = demoted_by, "demote_after_s + demotion_budget_s"
        if last + SAFETY_MARGIN_S > self.lease_ttl_s:
            errors.append((("lease_ttl_s",), f"must be at least {what} + {SAFETY_MARGIN_S:g} s ({last + SAFETY_MARGIN_S:g} s): "
                           "the old Primary must have stopped writing before etcd can let the peer take over"))
        return errors
