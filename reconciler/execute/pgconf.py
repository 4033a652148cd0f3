"""The one config file this tool owns in the data directory, its include line, the passfile.

`reconciler.conf` is included *last* from postgresql.conf (`include_if_exists`), and the
keys it owns are stripped from postgresql.auto.conf (read after postgresql.conf; written
by ALTER SYSTEM, pg_basebackup -R, pg_rewind -R), so the owned file always wins.
pg_basebackup and pg_rewind copy all of these files from the source: re-render after.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator

from reconciler import safefile, trust
from reconciler.observe.pgparse import guc_key, parse_guc_file, parse_sync_names, render_sync_names
from reconciler.pgrun import OWNED_CONF, PASSFILE, STANDBY_SIGNAL, Owner, PostgresError
from reconciler.spec.models import Postgres

OWNED_KEYS = ("port", "primary_conninfo", "primary_slot_name", "recovery_target_timeline", "wal_log_hints",
              "unix_socket_directories", "synchronous_standby_names")
# With synchronous replication (automatic failover) commits wait for the standby: a standby that is
# gone (a cut link drops packets silently) must leave pg_stat_replication quickly, so that the
# candidate is withdrawn and commits stop waiting; PostgreSQL's default is 60 s.  (Not an owned key:
# an operator's ALTER SYSTEM wal_sender_timeout, read after this file, still wins.)
SYNC_SENDER_TIMEOUT_S = 5
INCLUDE_LINE = f"include_if_exists = '{OWNED_CONF}'"
SOURCE_CONNECT_TIMEOUT_S = 5
MAX_PASSWORD_BYTES = 4096


def guc_quote(value: str) -> str:
    """A postgresql.conf string literal: backslashes and single quotes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def render_conninfo(params: dict[str, str]) -> str:
    """libpq keyword/value conninfo; values quoted when they hold spaces, quotes or backslashes."""
    out = []
    for key, value in params.items():
        if not value or any(c in value for c in " '\\\t\n"):
            value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        out.append(f"{key}={value}")
    return " ".join(out)


def source_conninfo(
    cfg: Postgres, host: str, port: int, node: str, passfile: str | None, dbname: str | None = None
) -> str:
    """How this node connects to its source: replication user, application_name=<node>."""
    params = {"host": host, "port": str(port), "user": cfg.replication_user, "application_name": node}
    if dbname:
        params["dbname"] = dbname
    if passfile:
        params["passfile"] = passfile
    params["connect_timeout"] = str(SOURCE_CONNECT_TIMEOUT_S)
    return render_conninfo(params)


def render_owned_conf(cfg: Postgres, conninfo: str, sync: tuple[str, ...] = ()) -> str:
    """The whole owned file; `conninfo` is '' on a primary or an idle standby; `sync` the
    standbys a primary's commits wait for (automatic failover; () on a standby)."""
    return (
        "# Written by reconciler; every change here is overwritten.\n"
        f"port = {cfg.port}\n"
        f"synchronous_standby_names = {guc_quote(render_sync_names(sync))}\n"
        + (f"wal_sender_timeout = '{SYNC_SENDER_TIMEOUT_S}s'  # a dead synchronous standby is seen in seconds\n"
           if cfg.synchronous else "")
        + f"primary_conninfo = {guc_quote(conninfo)}\n"
        "primary_slot_name = ''\n"
        "recovery_target_timeline = 'latest'\n"
        "wal_log_hints = on  # pg_rewind needs it (or data checksums)\n"
        + (f"unix_socket_directories = {guc_quote(cfg.socket_dir)}\n" if cfg.socket_dir else "")
    )


def read_password(cfg: Postgres) -> str | None:
    """The replication password from `cfg.password_file` (first line), or None."""
    if cfg.password_file is None:
        return None
    path = cfg.password_file
    try:
        trust.check_file(path, "replication password file", secret=True)  # root's, 0600
        data, _st = safefile.read_small(path, "replication password file", MAX_PASSWORD_BYTES)
    except (trust.UntrustedError, safefile.SmallFileError) as e:
        raise PostgresError(str(e)) from None
    try:  # errors never quote the file: not even the byte a decoder stopped at
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise PostgresError(f"{path}:{line}: the password file is not valid UTF-8") from None
    return text.split("\n", 1)[0].rstrip("\r") or None


def render_passfile(user: str, password: str) -> str:
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace(":", "\\:")

    return f"*:*:*:{esc(user)}:{esc(password)}\n"


def atomic_write(path: str, text: str, owner: Owner, mode: int | None = None) -> bool:
    """Make `path` (in a directory `owner` can write) hold `text`, owned by `owner`; False if
    unchanged.  Through `reconciler.safefile`: the directory is opened O_NOFOLLOW, the current
    file read O_NOFOLLOW (a link there is an error, never followed), a new temporary file of a
    random name created O_EXCL, renamed over `path`.  `mode` None keeps the current file's
    mode (0600 for a new one)."""
    folder, name = os.path.split(path)
    with safefile.directory(folder) as dfd:
        current = safefile.read(dfd, name)
        if current is not None and current[0] == text.encode():
            return False
        if mode is None:
            mode = stat.S_IMODE(current[1].st_mode) if current is not None else 0o600
        safefile.replace(dfd, name, text.encode(), mode, (owner.uid, owner.gid))
    return True


def _read_lines(path: str) -> list[str] | None:
    """The lines of the file `path` in the data directory, read O_NOFOLLOW; None if missing."""
    folder, name = os.path.split(path)
    with safefile.directory(folder) as dfd:
        current = safefile.read(dfd, name)
    return None if current is None else current[0].decode(errors="surrogateescape").splitlines()


def ensure_include(data_dir: str, owner: Owner) -> bool:
    """postgresql.conf ends with the include of the owned file (moved there if elsewhere)."""
    path = os.path.join(data_dir, "postgresql.conf")
    lines = _read_lines(path)
    if lines is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    meaningful = [ln.strip() for ln in lines if guc_key(ln) is not None]
    if meaningful and meaningful[-1] == INCLUDE_LINE:
        return False
    kept = [ln for ln in lines if ln.strip() != INCLUDE_LINE]
    text = "\n".join(kept + ["# Added by reconciler: must stay the last setting.", INCLUDE_LINE]) + "\n"
    return atomic_write(path, text, owner)


def sanitize_auto_conf(data_dir: str, owner: Owner) -> bool:
    """Drop owned keys from postgresql.auto.conf so that it cannot override the owned file."""
    path = os.path.join(data_dir, "postgresql.auto.conf")
    lines = _read_lines(path)
    if lines is None:
        return False
    kept = [ln for ln in lines if guc_key(ln) not in OWNED_KEYS]
    if kept == lines:
        return False
    return atomic_write(path, "\n".join(kept) + "\n", owner)


def owned_sync_names(data_dir: str) -> tuple[str, ...]:
    """synchronous_standby_names as the owned file sets it now (() when there is none)."""
    lines = _read_lines(os.path.join(data_dir, OWNED_CONF))
    if lines is None:
        return ()
    return parse_sync_names(parse_guc_file("\n".join(lines)).get("synchronous_standby_names", ""))


def write_config(cfg: Postgres, owner: Owner, source: tuple[str, int] | None, node: str,
                 sync: tuple[str, ...] | None = ()) -> None:
    """Passfile, owned file (conninfo to `source`, or none), include line, sanitized auto.conf.
    `sync`: the synchronous standbys to set; None keeps what the owned file has (a primary
    restarted in place keeps making its commits wait: relaxing that is a planned step)."""
    d = cfg.data_dir
    if sync is None:
        sync = owned_sync_names(d)
    passfile = None
    password = read_password(cfg)
    if password is not None:
        passfile = os.path.join(d, PASSFILE)
        atomic_write(passfile, render_passfile(cfg.replication_user, password), owner, 0o600)
    conninfo = source_conninfo(cfg, source[0], source[1], node, passfile) if source else ""
    atomic_write(os.path.join(d, OWNED_CONF), render_owned_conf(cfg, conninfo, sync), owner, 0o600)
    ensure_include(d, owner)
    sanitize_auto_conf(d, owner)


def write_standby_signal(data_dir: str, owner: Owner) -> None:
    atomic_write(os.path.join(data_dir, STANDBY_SIGNAL), "", owner, 0o600)


def remove_standby_signal(data_dir: str) -> None:
    with safefile.directory(data_dir) as dfd:
        if safefile.unlink(dfd, STANDBY_SIGNAL):
            os.fsync(dfd)


@contextlib.contextmanager
def temp_passfile(cfg: Postgres, owner: Owner) -> Iterator[str | None]:
    """A passfile only `owner` can read, for one pg_basebackup / pg_rewind run; then removed."""
    password = read_password(cfg)
    if password is None:
        yield None
        return
    folder = os.path.realpath(tempfile.gettempdir())
    with safefile.directory(folder) as dfd:
        fd, name = safefile.create_temp(dfd, "reconciler.pgpass", 0o600)
        try:
            try:
                os.fchown(fd, owner.uid, owner.gid)
                os.write(fd, render_passfile(cfg.replication_user, password).encode())
            finally:
                os.close(fd)
            yield os.path.join(folder, name)
        finally:
            safefile.unlink(dfd, name)
