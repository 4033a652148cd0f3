"""The agent: one reconcile cycle (`cycle`), the long-running loop (`run`), peering."""
