"""The two-node namespace cluster lives in reconciler.demo.cluster (the demo uses it too)."""

from reconciler.demo.cluster import *  # noqa: F401,F403
from reconciler.demo.cluster import NODES, PY, ROOT_DIR, VIP, TwoNode, in_ns, wait_for  # noqa: F401
