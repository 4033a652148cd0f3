"""A client that commits one row at a time through the floating IP and logs each
acknowledged commit (`id monotonic_time`) until the stop file appears.

    python -m bench._fastwriter HOST OUTFILE STOPFILE ID_BASE [fast|plain]   (from the checkout)

`fast` (default) never waits on TCP's own timers: a reconnect first probes the port with a
50 ms TCP connect (every 10 ms), unacknowledged data kills the connection after 200 ms
(tcp_user_timeout) and a silent peer after ~2 s (keepalives): its outage is the cluster's,
without the client's SYN backoff.  `plain` is exactly the test suite's writer
(demo/writer.py: connect_timeout=1, libpq defaults otherwise; the loop is its `commit_rows`), with ids from
ID_BASE so that it can replace a hung one on the same table.
"""

from __future__ import annotations

import os
import socket
import sys
import time

import psycopg

from demo.writer import commit_rows


def reachable(host: str) -> bool:
    try:
        with socket.create_connection((host, 5432), timeout=0.05):
            return True
    except OSError:
        return False


def main() -> int:
    host, out, stop, base = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    fast = (sys.argv[5] if len(sys.argv) > 5 else "fast") == "fast"
    opts = dict(tcp_user_timeout=200, keepalives_idle=1, keepalives_interval=1, keepalives_count=1) if fast else {}

    def connect() -> psycopg.Connection | None:
        if fast and not reachable(host):
            return None
        return psycopg.connect(host=host, port=5432, user="app", dbname="postgres",
                               connect_timeout=2 if fast else 1, autocommit=True, **opts)

    with open(out, "a", buffering=1) as log:
        commit_rows(connect, lambda i: log.write(f"{i} {time.monotonic():.6f}\n"), lambda: os.path.exists(stop),
                    first_id=base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
