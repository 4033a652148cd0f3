"""The desired-state file: models (`models`), address lists (`addresses`), loading with
file:line errors (`load`).  `LoadedSpec` is what the planner consumes: the validated
model plus the floating addresses resolved to typed `Address` values per interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from reconciler.address import Address
from reconciler.spec.models import Spec


@dataclass(frozen=True)
class LoadedSpec:
    spec: Spec
    # interface -> its floating addresses, sorted (by version, then address), unique.
    addresses: dict[str, tuple[Address, ...]] = field(default_factory=dict)
    digest: str = ""  # sha256 hex of the file bytes plus any ips_file bytes
    path: str = "<memory>"

    @cached_property
    def all_addresses(self) -> frozenset[Address]:
        """Every floating address, on any interface (made once per loaded spec)."""
        return frozenset(a for addrs in self.addresses.values() for a in addrs)

    @cached_property
    def address_sets(self) -> dict[str, frozenset[Address]]:
        """interface -> its floating addresses as a set (made once per loaded spec)."""
        return {name: frozenset(addrs) for name, addrs in self.addresses.items()}
