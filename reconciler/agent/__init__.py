"""The agent: the one reconcile loop (`loop`) that `run`, `apply` and `apply PLAN` share,
the long-running agent (`run`), peering."""
