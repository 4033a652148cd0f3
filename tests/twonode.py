"""The two-node namespace cluster lives in demo.cluster (the demo uses it too)."""

from demo.cluster import *  # noqa: F401,F403
from demo.cluster import NODES, PY, ROOT_DIR, VIP, TwoNode, in_ns, wait_for  # noqa: F401
