"""The coordination part of `reconciler status`: each etcd member, and who holds the leader key.

Shown when the spec names a witness (the etcd cluster of automatic failover), in either mode, so
that an operator can check etcd before switching `failover.mode` to automatic.  Credentials come
from the root-only password file; neither the password nor a token is ever shown.
"""

from __future__ import annotations

from reconciler import safefile, trust
from reconciler.coord.election import Election
from reconciler.coord.etcd import Credentials, EtcdClient, EtcdError
from reconciler.spec.models import Spec

STATUS_TIMEOUT_S = 1.5
MAX_PASSWORD_BYTES = 1024


class CoordConfigError(Exception):
    pass


def _password(path: str) -> str:
    try:
        trust.check_file(path, "etcd password file", secret=True)
        data, _ = safefile.read_small(path, "etcd password file", MAX_PASSWORD_BYTES)
    except (trust.UntrustedError, safefile.SmallFileError) as e:
        raise CoordConfigError(str(e)) from None
    except OSError as e:
        raise CoordConfigError(f"{path}: cannot read the etcd password file: {e.strerror}") from None
    return data.decode("utf-8", errors="strict").strip()


def client_for(spec: Spec, timeout: float | None = None) -> EtcdClient:
    e = spec.failover.etcd
    creds = None
    if e.username is not None and e.password_file is not None:
        creds = Credentials(e.username, _password(e.password_file))
    for path, what in ((e.ca_file, "etcd CA file"), (e.cert_file, "etcd client certificate"),
                       (e.key_file, "etcd client key")):
        if path is not None:
            try:
                trust.check_file(path, what, secret=what.endswith("key"))
            except trust.UntrustedError as err:
                raise CoordConfigError(str(err)) from None
    return EtcdClient(spec.etcd_endpoints(), timeout=timeout or e.request_timeout_s, ca_file=e.ca_file,
                      cert_file=e.cert_file, key_file=e.key_file, credentials=creds)


def coordination_lines(spec: Spec) -> list[str]:
    f = spec.failover
    if f.witness is None:
        return [f"Failover  {f.mode}"]
    out = [f"Failover  {f.mode}; etcd members {', '.join(spec.etcd_members())} (witness {f.witness.name}), "
           f"keys below {spec.etcd_prefix()}"]
    try:
        client = client_for(spec, STATUS_TIMEOUT_S)
    except CoordConfigError as e:
        return [*out, f"etcd      not queried: {e}"]
    for i, url in enumerate(spec.etcd_endpoints()):
        try:
            st = client.status(i)
            leader = "is the raft leader" if st.get("leader") == st.get("header", {}).get("member_id") else "follower"
            out.append(f"etcd      {url}: up, {leader}, raft term {st.get('raftTerm', '?')}, version {st.get('version', '?')}")
        except EtcdError as e:
            out.append(f"etcd      {url}: DOWN or unreachable ({e})")
    try:
        lead = Election(client, spec.etcd_prefix()).read()
    except EtcdError as e:
        return [*out, f"Leader    unknown: no quorum answered ({e})"]
    holder = (f"held by {lead.holder} at epoch {lead.holder_epoch} (lease {lead.holder_lease:x})"
              if lead.holder is not None and lead.holder_lease is not None else "held by nobody")
    cand = (f"; failover candidate {lead.candidate} (published at epoch {lead.candidate_epoch})"
            if lead.candidate is not None else "; no failover candidate")
    out.append(f"Leader    {holder}; last epoch {lead.epoch}{cand}")
    return out
