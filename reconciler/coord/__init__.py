"""Coordination for automatic failover: etcd (three members, one on a witness) through its v3 JSON
gateway.  Nothing here decides; the planner does, from what these modules report."""
