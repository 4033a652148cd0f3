"""The spec's `failover.etcd` settings as an etcd client (agent, `status`) and as the lease
keeper's options (paths only: the keeper reads the root-only password file itself)."""

from __future__ import annotations

from reconciler.coord.connect import client
from reconciler.coord.etcd import EtcdClient
from reconciler.spec.models import Spec


def client_for(spec: Spec, timeout: float | None = None) -> EtcdClient:
    e = spec.failover.etcd
    return client(spec.etcd_endpoints(), timeout or e.request_timeout_s, ca_file=e.ca_file, cert_file=e.cert_file,
                  key_file=e.key_file, username=e.username, password_file=e.password_file)


def keeper_args(spec: Spec) -> list[str]:
    """The same settings as lease-keeper options (paths only)."""
    e = spec.failover.etcd
    out = [f"--endpoint={u}" for u in spec.etcd_endpoints()] + [f"--timeout={e.request_timeout_s:g}"]
    for opt, value in (("--ca-file", e.ca_file), ("--cert-file", e.cert_file), ("--key-file", e.key_file),
                       ("--username", e.username), ("--password-file", e.password_file)):
        if value is not None:
            out.append(f"{opt}={value}")
    return out
