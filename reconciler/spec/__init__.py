"""The desired-state file: models (`models`), address lists (`addresses`), loading with
file:line errors (`load`: `load_spec` is the one way in).  `LoadedSpec` is what it gives
and what the planner, the drivers and the agent consume: the validated model plus the
floating addresses resolved to typed `Address` values per interface, the digest of the bytes
read and, for a spec read from git, the commit."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from reconciler.address import Address
from reconciler.spec.models import Spec


@dataclass(frozen=True)
class LoadedSpec:
    model: Spec  # the validated file: loaded.model.primary, loaded.model.nodes, ...
    # interface -> its floating addresses, sorted (by version, then address), unique.
    addresses: dict[str, tuple[Address, ...]] = field(default_factory=dict)
    digest: str = ""  # sha256 hex of the file bytes plus any ips_file bytes
    path: str = "<memory>"
    revision: str | None = None  # the git commit it was read at; None for a plain file

    @cached_property
    def all_addresses(self) -> frozenset[Address]:
        """Every floating address, on any interface (made once per loaded spec)."""
        return frozenset(a for addrs in self.addresses.values() for a in addrs)

    @cached_property
    def address_sets(self) -> dict[str, frozenset[Address]]:
        """interface -> its floating addresses as a set (made once per loaded spec)."""
        return {name: frozenset(addrs) for name, addrs in self.addresses.items()}
