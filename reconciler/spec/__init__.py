"""The desired-state file: models (`models`), address lists (`addresses`), loading with
file:line errors (`load`).  `LoadedSpec` is what the planner consumes: the validated
model plus the floating addresses resolved to canonical strings per interface."""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.spec.models import Spec


@dataclass(frozen=True)
class LoadedSpec:
    spec: Spec
    # interface -> canonical "addr/prefix" strings (ipaddress.ip_interface(...).with_prefixlen,
    # IPv6 compressed), sorted by (version, address int), unique.
    addresses: dict[str, tuple[str, ...]] = field(default_factory=dict)
    digest: str = ""  # sha256 hex of the file bytes plus any ips_file bytes
    path: str = "<memory>"

    @property
    def all_addresses(self) -> frozenset[str]:
        return frozenset(a for addrs in self.addresses.values() for a in addrs)
