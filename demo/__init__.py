"""The demo (`python -m demo`, run by scripts/demo) and its two-node namespace cluster.

A tool of this repository, like bench/ and lab/, not part of the installed package: run it
from the checkout.  `demo.cluster` is also the integration tier's cluster, `demo.writer` the
client that commits through the floating address, `demo/svc_daemon.py` the stand-in service.
"""
