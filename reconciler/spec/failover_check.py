"""The checks of an automatic `failover:` section that need the whole spec (two nodes, a witness
that is another machine, synchronous replication, the timing relations, TLS and credentials)."""

from __future__ import annotations

import ipaddress

from reconciler.spec.models import Loc, Spec, SpecValueError


def check_failover(spec: Spec, plan_only: bool = False) -> None:
    f = spec.failover
    if f.mode != "automatic":
        if spec.postgres is not None and spec.postgres.synchronous and not plan_only:
            raise SpecValueError(("postgres", "synchronous"), "synchronous replication is managed only in "
                                 "failover.mode: automatic (it decides the failover candidate): remove it or set it false")
        return
    if len(spec.nodes) != 2:
        raise SpecValueError(("failover", "mode"), "automatic failover needs two nodes")
    if f.witness is None:
        raise SpecValueError(("failover", "mode"), "automatic failover needs a witness (failover.witness: name, "
                             "address): the third etcd member, so that either node alone is never a majority")
    if f.witness.name in spec.nodes:
        raise SpecValueError(("failover", "witness", "name"), "the witness must not be one of the nodes")
    if any(ipaddress.ip_address(n.address) == ipaddress.ip_address(f.witness.address) for n in spec.nodes.values()):
        raise SpecValueError(("failover", "witness", "address"), "the witness must be another machine than the nodes")
    if spec.postgres is None or not spec.postgres.synchronous:
        loc: Loc = ("postgres", "synchronous") if spec.postgres is not None else ("failover", "mode")
        raise SpecValueError(loc, "automatic failover needs postgres.synchronous: true (without it a "
                             "takeover can lose commits the old Primary acknowledged)")
    if spec.postgres.replication_source != "primary":
        raise SpecValueError(("postgres", "replication_source"),
                             "automatic failover needs 'primary' (the standby follows whoever holds the lease)")
    for path, reason in f.timing_errors():
        raise SpecValueError(("failover", *path), reason)
    if any(e.startswith("https://") for e in spec.etcd_endpoints()) != (f.etcd.ca_file is not None):
        raise SpecValueError(("failover", "etcd", "ca_file"), "https endpoints need a ca_file, and a ca_file "
                             "needs https endpoints")
    if (f.etcd.username is None) != (f.etcd.password_file is None):
        raise SpecValueError(("failover", "etcd", "username" if f.etcd.username is None else "password_file"),
                             "username and password_file go together")
