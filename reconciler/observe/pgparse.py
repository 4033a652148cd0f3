"""Pure parsers of PostgreSQL's own text: pg_controldata, pg_waldump, history files, config.

Kept apart from `observe.postgres` (which runs the tools and queries the server) so that
every parser is a function of captured text, tested on verbatim output of PostgreSQL 15
in tests/fixtures/postgres/.  LSNs come out canonical (upper-case hex, unpadded halves).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reconciler.model import TimelineSwitch, int_to_lsn, lsn_to_int

_LSN = r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}"


def canonical_lsn(value: str) -> str:
    """'0/01741570' (pg_waldump) -> '0/1741570' (as pg_controldata and SQL print it)."""
    return int_to_lsn(lsn_to_int(value))


@dataclass(frozen=True)
class ControlData:
    cluster_state: str | None = None
    checkpoint_lsn: str | None = None
    checkpoint_timeline: int | None = None
    system_identifier: str | None = None
    rewind_possible: bool | None = None
    min_recovery_lsn: str | None = None
    wal_block_size: int = 8192
    wal_segment_size: int = 16 << 20
    max_align: int = 8


def parse_controldata(text: str) -> ControlData:
    """`LANG=C pg_controldata` output -> the fields the planner needs."""
    kv: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            kv[key.strip().removeprefix("Current ")] = value.strip()

    def lsn(key: str) -> str | None:
        v = kv.get(key)
        return canonical_lsn(v) if v and re.fullmatch(_LSN, v) else None

    def num(key: str, default: int) -> int:
        v = kv.get(key, "")
        return int(v) if v.isdigit() else default

    tli = kv.get("Latest checkpoint's TimeLineID")
    hints, checksums = kv.get("wal_log_hints setting"), kv.get("Data page checksum version")
    rewind = None if hints is None and checksums is None else (hints == "on" or checksums not in (None, "0"))
    return ControlData(
        cluster_state=kv.get("Database cluster state"),
        checkpoint_lsn=lsn("Latest checkpoint location"),
        checkpoint_timeline=int(tli) if tli and tli.isdigit() else None,
        system_identifier=kv.get("Database system identifier"),
        rewind_possible=rewind,
        min_recovery_lsn=lsn("Minimum recovery ending location"),
        wal_block_size=num("WAL block size", 8192),
        wal_segment_size=num("Bytes per WAL segment", 16 << 20),
        max_align=num("Maximum data alignment", 8),
    )


# pg_waldump's record line: "... len (rec/tot):    114/   114, tx: 0, lsn: 0/030199D0, ..."
_WALDUMP_RECORD = re.compile(rf"^rmgr: .*len \(rec/tot\): +\d+/ *(\d+), .*lsn: ({_LSN}), .*desc: (\w+)", re.M)
# PG15: "invalid record length at 0/30391A0: wanted 24, got 0"; PG16+: "expected at least 24".
_WALDUMP_END = re.compile(rf"invalid record length at ({_LSN}): (?:wanted|expected at least) \d+")


def wal_record_end(start: int, total_len: int, block_size: int, segment_size: int, align: int = 8) -> int:
    """Where the next record starts: pages begin with a 24-byte header (40 at a segment
    start) that a record crosses; records are MAXALIGNed.  This is the promotion switchpoint."""
    pos, left = start, total_len
    while left > block_size - pos % block_size:
        left -= block_size - pos % block_size
        pos += block_size - pos % block_size
        pos += 40 if pos % segment_size == 0 else 24
    pos += left
    return (pos + align - 1) // align * align


def parse_waldump_checkpoint_end(
    stdout: str, stderr: str, block_size: int = 8192, segment_size: int = 16 << 20, align: int = 8
) -> str | None:
    """End of the shutdown checkpoint record from `pg_waldump -s CHECKPOINT_LSN -n 2`.

    The first record must be a CHECKPOINT_SHUTDOWN and the second must be unreadable (the
    WAL ends there).  The end is computed from the record's position and length: pg_waldump's
    complaint names it only when it lies inside a page ("invalid record length at X", which
    must agree); at a page or segment boundary it complains about the page or the missing
    file instead.  Anything else (WAL written after the checkpoint) -> None.
    """
    records = _WALDUMP_RECORD.findall(stdout)
    if len(records) != 1 or records[0][2] != "CHECKPOINT_SHUTDOWN" or "error" not in stderr:
        return None
    end = int_to_lsn(wal_record_end(lsn_to_int(records[0][1]), int(records[0][0]), block_size, segment_size, align))
    m = _WALDUMP_END.search(stderr)
    if m and canonical_lsn(m.group(1)) != end:
        return None
    return end


def parse_history(text: str) -> tuple[TimelineSwitch, ...]:
    """`pg_wal/0000000N.history`: one `parent<TAB>switchpoint<TAB>reason` line per ancestor."""
    out = []
    for line in text.splitlines():
        fields = line.strip().split(None, 2)
        if len(fields) >= 2 and fields[0].isdigit() and re.fullmatch(_LSN, fields[1]):
            out.append(TimelineSwitch(parent=int(fields[0]), switchpoint=canonical_lsn(fields[1])))
    return tuple(out)


_GUC_LINE = re.compile(r"\s*([A-Za-z_][\w.]*)\s*=?\s*('(?:[^'\\]|\\.|'')*'|[^\s#']+)\s*(?:#.*)?")
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(body: str, doubled_quote: bool) -> str:
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
        elif doubled_quote and body.startswith("''", i):
            out.append("'")
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def guc_key(line: str) -> str | None:
    """The parameter a config-file line sets (lower case), or None for comments and blanks."""
    m = _GUC_LINE.fullmatch(line)
    return m.group(1).lower() if m else None


def parse_guc_file(text: str) -> dict[str, str]:
    """postgresql.conf syntax: `name = value` lines, quoted values unescaped; last one wins."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _GUC_LINE.fullmatch(line)
        if m:
            v = m.group(2)
            out[m.group(1).lower()] = _unescape(v[1:-1], True) if v.startswith("'") else v
    return out


_CONNINFO_ITEM = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|(?:[^\s'\\]|\\.)+)")


def parse_conninfo(text: str) -> dict[str, str]:
    """libpq keyword/value conninfo: `host=a port=5432 application_name='x y'`."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text) and text[pos:].strip():
        m = _CONNINFO_ITEM.match(text, pos)
        if m is None:
            raise ValueError("not a keyword=value conninfo")  # no excerpt: it may hold a password
        v = m.group(2)
        out[m.group(1)] = _unescape(v[1:-1] if v.startswith("'") else v, False)
        pos = m.end()
    return out


_SYNC_METHOD = re.compile(r"(?is)^\s*(?:(first|any)\s+)?(\d+)\s*\((.*)\)\s*$")


def parse_sync_names(value: str) -> tuple[str, ...]:
    """synchronous_standby_names as the standby names it lists (`a, "b"`, `FIRST 1 (a, b)`,
    `ANY 2 (a, b, c)`; `*` stays `*`); () when commits wait for nobody."""
    m = _SYNC_METHOD.match(value)
    body = m.group(3) if m else value
    names = []
    for item in body.split(","):
        item = item.strip()
        if len(item) >= 2 and item.startswith('"') and item.endswith('"'):
            item = item[1:-1].replace('""', '"')
        if item:
            names.append(item)
    return tuple(names)


def render_sync_names(names: tuple[str, ...]) -> str:
    """The value for synchronous_standby_names: FIRST n of the quoted names ('' for none)."""
    if not names:
        return ""
    return f"FIRST {len(names)} (" + ", ".join('"' + n.replace('"', '""') + '"' for n in names) + ")"
