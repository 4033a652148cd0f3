"""Writing files in a directory another user owns or can write (the PostgreSQL data
directory, /tmp, an operator's directory): never through a link, never over what is there.

Every write goes through a directory file descriptor opened with O_DIRECTORY|O_NOFOLLOW:
the temporary file is created relative to it with O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC under
a fresh random name (`.NAME.<16 hex>.tmp`, retried on a collision), its owner and mode are
set on the descriptor (fchown, fchmod), its data fsync'ed, then it is renamed over NAME
(renameat: a symlink at NAME is replaced, never followed) and the directory fsync'ed.
A file or symlink left at some temporary name (a crash, or planted by the directory's owner)
is never opened, followed, reused or removed: a new name is drawn instead.  A failed write
removes only its own temporary file (unlinkat, which does not follow a link).
Reads of a file in such a directory open it O_NOFOLLOW and refuse anything but a regular file.

Standard library only: every layer that writes may import it (see pyproject.toml).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
TEMP_TRIES = 100


def open_dir(path: str) -> int:
    """A descriptor of the directory `path`; ELOOP/ENOTDIR if its last component is a link
    or not a directory (the components above it are the caller's to trust)."""
    return os.open(path, DIR_FLAGS)


@contextlib.contextmanager
def directory(path: str) -> Iterator[int]:
    fd = open_dir(path)
    try:
        yield fd
    finally:
        os.close(fd)


def split_real(path: str) -> tuple[str, str]:
    """(the directory as it resolves now, the file name) of an operator-given `path`: a link
    in the directory part is the operator's choice; the file name itself is never followed."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.realpath(folder), name


def temp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(8)}.tmp"


def create_temp(dir_fd: int, name: str, mode: int) -> tuple[int, str]:
    """(write descriptor, its name) of a new empty file in `dir_fd`, mode `mode`; the
    existing name (file or link) of an earlier run is never touched: another is drawn."""
    for _ in range(TEMP_TRIES):
        tmp = temp_name(name)
        try:
            return os.open(tmp, CREATE_FLAGS, mode & 0o777, dir_fd=dir_fd), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name for {name} after {TEMP_TRIES} tries")


def _fill(fd: int, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    if owner is not None:
        os.fchown(fd, owner[0], owner[1])
    os.fchmod(fd, mode & 0o7777)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _temp_with(dir_fd: int, name: str, data: bytes, mode: int, owner: tuple[int, int] | None) -> str:
    fd, tmp = create_temp(dir_fd, name, 0o600)
    try:
        _fill(fd, data, mode, owner)
    except BaseException:
        os.close(fd)
        unlink(dir_fd, tmp)
        raise
    os.close(fd)
    return tmp


def replace(dir_fd: int, name: str, data: bytes, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
    """Atomically make `name` in `dir_fd` hold `data`, with `mode` and `owner` (uid, gid)."""
    tmp = _temp_with(dir_fd, name, data, mode, owner)
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        unlink(dir_fd, tmp)
        raise
    os.fsync(dir_fd)


def create_new(dir_fd: int, name: str, data: bytes, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
    """Create `name` in `dir_fd` holding `data`, atomically; FileExistsError if anything
    (a file, a link) is there already: it is left untouched."""
    tmp = _temp_with(dir_fd, name, data, mode, owner)
    try:
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    finally:
        unlink(dir_fd, tmp)
    os.fsync(dir_fd)


def unlink(dir_fd: int, name: str) -> bool:
    """Remove `name` (a link itself, never its target); False if it was not there."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def read(dir_fd: int, name: str, cap: int = 64 << 20) -> tuple[bytes, os.stat_result] | None:
    """The bytes (at most `cap`) and the stat of the regular file `name` in `dir_fd`, None if
    it does not exist; OSError if it is a link (ELOOP) or not a regular file."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link, not followed", name) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", name)
        chunks, left = [], cap
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def read_text(path: str, cap: int = 1 << 20) -> str | None:
    """The text of the regular file `path` (at most `cap` bytes, undecodable bytes replaced),
    None if it does not exist.  For files in a directory another user writes (the PostgreSQL
    data directory): the file itself is never followed if a link and never opened if a FIFO
    or device (no hang), the directories above it resolve as usual (pg_wal may be a link)."""
    folder, name = os.path.split(path)
    try:
        dfd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        got = read(dfd, name, cap)
    finally:
        os.close(dfd)
    return None if got is None else got[0].decode("utf-8", errors="replace")


class SmallFileError(ValueError):
    """A small file (a secret, a password) is unusable: one line naming it, never its contents."""


def read_small(path: str | os.PathLike[str], what: str, cap: int = 4096) -> tuple[bytes, os.stat_result]:
    """The bytes and the stat of `path`, a regular file of at most `cap` bytes (a password or a
    shared secret), read by path (a link the operator made is followed; the caller checks the
    chain with `trust`) but never blocking on a FIFO and never reading a device.  Errors
    (`SmallFileError`) name the file and `what` it is for, never a byte of it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise SmallFileError(f"{os.fspath(path)}: cannot open the {what}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SmallFileError(f"{os.fspath(path)}: the {what} is not a regular file")
        data = os.read(fd, cap + 1)
    finally:
        os.close(fd)
    if len(data) > cap:
        raise SmallFileError(f"{os.fspath(path)}: the {what} is longer than {cap} bytes")
    return data, st


def write_file(path: str, data: bytes, mode: int = 0o600) -> None:
    """`replace` for an operator-given path (`plan -out FILE`): see `split_real`."""
    folder, name = split_real(path)
    with directory(folder) as dfd:
        replace(dfd, name, data, mode)
