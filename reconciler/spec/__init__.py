"""The desired-state file: models (`models`), address lists (`addresses`), loading with
file:line errors (`load`: `load_spec` is the one way in).  `LoadedSpec` is what it gives
and what the planner, the drivers and the agent consume: the validated model plus the
floating addresses resolved to canonical strings per interface, the digest of the bytes
read and, for a spec read from git, the commit."""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.spec.models import Spec


@dataclass(frozen=True)
class LoadedSpec:
    model: Spec  # the validated file: loaded.model.primary, loaded.model.nodes, ...
    # interface -> canonical "addr/prefix" strings (ipaddress.ip_interface(...).with_prefixlen,
    # IPv6 compressed), sorted by (version, address int), unique.
    addresses: dict[str, tuple[str, ...]] = field(default_factory=dict)
    digest: str = ""  # sha256 hex of the file bytes plus any ips_file bytes
    path: str = "<memory>"
    revision: str | None = None  # the git commit it was read at; None for a plain file

    @property
    def spec(self) -> Spec:
        """The former name of `model`, still read by the planner, the executor and the simulator."""
        return self.model

    @property
    def all_addresses(self) -> frozenset[str]:
        return frozenset(a for addrs in self.addresses.values() for a in addrs)
