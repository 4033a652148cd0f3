"""The coordination part of `reconciler status`: each etcd member, and who holds the leader key.

Shown when the spec names a witness (the etcd cluster of automatic failover), in either mode, so
that an operator can check etcd before switching `failover.mode` to automatic.  Credentials come
from the root-only password file; neither the password nor a token is ever shown.
"""

from __future__ import annotations

from reconciler.agent.etcd_access import client_for
from reconciler.coord.connect import CoordConfigError
from reconciler.coord.election import Election
from reconciler.coord.etcd import EtcdError
from reconciler.spec.models import Spec

STATUS_TIMEOUT_S = 1.5


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
