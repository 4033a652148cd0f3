"""A client that commits one row at a time through the floating IP and logs each
acknowledged commit (`id monotonic_time`), until the stop file appears.

    writer.py HOST OUTFILE STOPFILE [FIRST_ID]

(ids start after FIRST_ID, 0 by default: a second client on the same table starts elsewhere)

`commit_rows` is the loop itself, shared with the lab's in-process writer
(lab.cluster.Writer) and the benchmark's fast client (bench/_fastwriter.py).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import psycopg


def commit_rows(
    connect: Callable[[], psycopg.Connection | None],
    acked: Callable[[int], None],
    stopped: Callable[[], bool],
    *,
    first_id: int = 0,
    pace_s: float = 0.0,
    retry_s: float = 0.01,
    wait: Callable[[float], object] = time.sleep,
) -> None:
    """One autocommit INSERT per row until `stopped()`; `acked(id)` after each commit.

    Any error drops the connection and `connect()` runs again (None: not yet, wait and
    retry).  An id whose INSERT failed is never reused: it may have committed unseen."""
    i, conn = first_id, None
    try:
        while not stopped():
            try:
                if conn is None:
                    conn = connect()
                    if conn is None:
                        wait(retry_s)
                        continue
                i += 1
                conn.execute("INSERT INTO writes (id) VALUES (%s)", (i,))
                acked(i)
                if pace_s:
                    wait(pace_s)
            except psycopg.Error:
                _close(conn)
                conn = None
                wait(retry_s)
    finally:
        _close(conn)


def _close(conn: psycopg.Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except psycopg.Error:
            pass


def main() -> int:
    host, out, stop = sys.argv[1:4]
    first = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    with open(out, "a", buffering=1) as log:
        commit_rows(
            lambda: psycopg.connect(host=host, port=5432, user="app", dbname="postgres", connect_timeout=1,
                                    autocommit=True),
            lambda i: log.write(f"{i} {time.monotonic():.6f}\n"),
            lambda: os.path.exists(stop),
            first_id=first,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
