"""A client that commits one row at a time through the floating IP and logs each
acknowledged commit (`id monotonic_time`), until the stop file appears.

    writer.py HOST OUTFILE STOPFILE
"""

from __future__ import annotations

import os
import sys
import time

import psycopg


def main() -> int:
    host, out, stop = sys.argv[1:4]
    i = 0
    conn = None
    with open(out, "a", buffering=1) as log:
        while not os.path.exists(stop):
            try:
                if conn is None:
                    conn = psycopg.connect(host=host, port=5432, user="app", dbname="postgres",
                                           connect_timeout=1, autocommit=True)
                i += 1
                conn.execute("INSERT INTO writes (id) VALUES (%s)", (i,))
                log.write(f"{i} {time.monotonic():.6f}\n")
            except psycopg.Error:
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg.Error:
                        pass
                conn = None
                time.sleep(0.01)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
