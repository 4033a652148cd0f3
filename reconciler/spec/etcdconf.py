"""Each etcd member's configuration, from the spec: `reconciler etcd-config FILE MEMBER`.

The output is an environment file for Debian's etcd unit (/etc/default/etcd, read by
etcd.service as EnvironmentFile), one ETCD_* variable per line; etcd reads every flag from the
variable of the same name.  Members are both nodes and the witness, named as in the spec, at
the spec's addresses.  Choices made here:

- pre-vote on (3.4 defaults to off): a member that was cut off and comes back cannot disturb a
  healthy leader with a higher term;
- the v2 API off (3.4's default, stated): the agents use v3 only;
- clients may also connect on 127.0.0.1 on the nodes (the local agent);
- heartbeat and election timeouts stay at etcd's defaults (100 ms, 1,000 ms), which the lease
  timings of `failover:` are measured against.
"""

from __future__ import annotations

from reconciler.spec.models import Spec


class EtcdConfigError(ValueError):
    """The spec cannot describe an etcd cluster (no witness, an unknown member)."""


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def member_env(spec: Spec, member: str) -> list[tuple[str, str]]:
    """The (variable, value) pairs of `member`'s etcd configuration."""
    f = spec.failover
    if f.witness is None:
        raise EtcdConfigError("failover.witness is not set: etcd needs three members (both nodes and a witness)")
    members = spec.etcd_members()
    if member not in members:
        raise EtcdConfigError(f"{member!r} is not an etcd member of this spec (members: {', '.join(members)})")
    e = f.etcd
    tls = e.ca_file is not None
    scheme = "https" if tls else "http"
    addr = _host(members[member])
    peer_url = f"{scheme}://{addr}:{e.peer_port}"
    client_url = f"{scheme}://{addr}:{e.client_port}"
    listen_client = client_url if member == f.witness.name else f"{client_url},{scheme}://127.0.0.1:{e.client_port}"
    env = [
        ("ETCD_NAME", member),
        ("ETCD_DATA_DIR", e.data_dir),
        ("ETCD_LISTEN_PEER_URLS", peer_url),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", peer_url),
        ("ETCD_LISTEN_CLIENT_URLS", listen_client),
        ("ETCD_ADVERTISE_CLIENT_URLS", client_url),
        ("ETCD_INITIAL_CLUSTER", ",".join(f"{name}={scheme}://{_host(a)}:{e.peer_port}" for name, a in members.items())),
        ("ETCD_INITIAL_CLUSTER_STATE", "new"),
        ("ETCD_INITIAL_CLUSTER_TOKEN", f"reconciler-{spec.cluster}"),
        ("ETCD_PRE_VOTE", "true"),
        ("ETCD_ENABLE_V2", "false"),
    ]
    if tls:
        assert e.ca_file is not None
        for side in ("", "PEER_"):
            env += [(f"ETCD_{side}TRUSTED_CA_FILE", e.ca_file),
                    (f"ETCD_{side}CERT_FILE", f"/etc/etcd/{member}.crt"),
                    (f"ETCD_{side}KEY_FILE", f"/etc/etcd/{member}.key"),
                    (f"ETCD_{side}CLIENT_CERT_AUTH", "true")]
    return env


def member_config(spec: Spec, member: str, source: str) -> str:
    """The environment file's text, with a header saying where it came from and what to do."""
    env = member_env(spec, member)
    head = [f"# etcd member {member} of cluster {spec.cluster}: written by `reconciler etcd-config` from {source}",
            "# Install as /etc/default/etcd on that machine, then: systemctl restart etcd",
            "# Keep the data directory on a fast local disk, never on DRBD."]
    if spec.failover.etcd.ca_file is not None:
        head.append(f"# TLS: put this member's certificate and key at /etc/etcd/{member}.crt and .key "
                    "(signed by the CA in ETCD_TRUSTED_CA_FILE; the key readable by etcd only).")
    return "\n".join(head + [f"{k}={v}" for k, v in env]) + "\n"
