"""Root acts only on what root controls: the ownership and mode checks done before a file
that can make root run something, or give up a secret, is read.

`check_file(path, what)` refuses (`UntrustedError`, one line naming the file and the exact
fix) a file unless it, and every directory from / down to it, is

- owned by root or by the invoking user (the euid), and
- not writable by group or others;

and with `secret=True` the file must not be readable (or anything) by group or others
either (0600 or 0400).  This is OpenSSH's StrictModes rule, with one relaxation: a
directory writable by others that has the sticky bit (/tmp) is accepted as a parent when
the entry looked up in it is owned by root or the invoking user, since the sticky bit
keeps others from renaming or removing that entry (so /tmp/pytest-of-root/... is fine, and
/tmp/some-file-of-nobody is not).  An entry that does not exist in such a directory is
refused: anyone could create it.

Symbolic links are followed the way the kernel follows them, and each directory in which a
name is looked up (the link's own directory, then the target's chain) is checked: a link
in a root-only directory to a file of another user is refused like the file itself.

A file that does not exist (in a directory that is checked) passes: there is nothing to
trust yet, and the reader reports it.  The checks are by path, so they hold only with the
whole chain trusted; that is exactly what they require, so no one but root can swap a
component between the check and the read.

`check_dirs(path, what)` checks only the directories above `path` (for readers that check
the file itself on the descriptor they opened, as `peer.auth.load_secret` does);
`check_tree(top, what, ...)` checks a directory tree (a git directory).

This module is at the bottom layer: it imports nothing of the package, so the spec loader,
the drivers, the peer channel and the agent may all use it (etcd credentials and hook
scripts later too).
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Callable

MAX_LINKS = 40  # like the kernel's ELOOP limit


class UntrustedError(Exception):
    """A file or directory root must not act on: one line naming it and the fix."""


def trusted_owners() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _refuse(what: str, path: str, subject: str, st: os.stat_result, secret: bool = False,
            check_owner: bool = True) -> None:
    """Raise if `st` (of `subject`, the file itself or a directory above it) is not root's."""
    problems, fixes = [], []
    if check_owner and st.st_uid not in trusted_owners():
        problems.append(f"owned by {_user(st.st_uid)}, not root")
        fixes.append(f"chown root {subject}")
    mode = stat.S_IMODE(st.st_mode)
    if secret and mode & 0o077:
        problems.append(f"accessible by group/others (mode {mode:04o})")
        fixes.append(f"chmod 600 {subject}")
    elif mode & 0o022:
        problems.append(f"writable by group/others (mode {mode:04o})")
        fixes.append(f"chmod go-w {subject}")
    if not problems:
        return
    it = "it" if subject == path else f"its directory {subject}" if stat.S_ISDIR(st.st_mode) else subject
    raise UntrustedError(f"refusing the {what} {path}: {it} is {' and '.join(problems)}; fix: {' && '.join(fixes)}")


def _check_dir(what: str, path: str, d: str, st: os.stat_result, entry: str) -> os.stat_result | None:
    """The directory `d` (stat `st`) in which `entry` is looked up; the entry's lstat, or None if absent."""
    writable = stat.S_IMODE(st.st_mode) & 0o022
    if st.st_uid not in trusted_owners() or writable and not st.st_mode & stat.S_ISVTX:
        _refuse(what, path, d, st)
    sub = os.path.join(d, entry)
    try:
        est: os.stat_result | None = os.lstat(sub)
    except OSError:  # absent, not a directory, no permission: the reader reports it
        est = None
    if writable:  # and sticky: only the entry's owner (and root) can rename or remove it
        if est is None:
            raise UntrustedError(f"refusing the {what} {path}: {sub} does not exist in {d}, which others can write "
                                 f"to, so anyone could create it; fix: use a directory only root can write to")
        if est.st_uid not in trusted_owners():
            raise UntrustedError(f"refusing the {what} {path}: {sub} is owned by {_user(est.st_uid)}, not root, "
                                 f"in {d}, which others can write to; fix: chown root {sub}")
    return est


def _walk(what: str, path: str, target: str, links: list[int]) -> tuple[str, os.stat_result | None]:
    """Resolve `target` as the kernel would, checking each directory a name is looked up in:
    (the real path, the stat of its last component or None if absent).  The last component
    itself is the caller's to check."""
    cur, cst = "/", os.stat("/")
    if not os.path.isabs(target):
        target = os.path.join(os.getcwd(), target)
    parts = [p for p in target.split("/") if p not in ("", ".")]
    for i, name in enumerate(parts):
        if not stat.S_ISDIR(cst.st_mode):
            return os.path.join(cur, *parts[i:]), None  # ENOTDIR: the reader says so
        if name == "..":  # `cur` is a real path whose every ancestor was checked on the way down
            cur = os.path.dirname(cur)
            cst = os.stat(cur)
            continue
        est = _check_dir(what, path, cur, cst, name)
        nxt = os.path.join(cur, name)
        if est is not None and stat.S_ISLNK(est.st_mode):
            links[0] += 1
            if links[0] > MAX_LINKS:
                raise UntrustedError(f"refusing the {what} {path}: too many levels of symbolic links")
            link = os.readlink(nxt)
            nxt, est = _walk(what, path, link if os.path.isabs(link) else os.path.join(cur, link), links)
        if est is None:
            return os.path.join(nxt, *parts[i + 1:]), None
        cur, cst = nxt, est
    return cur, cst


def check_file(path: str | os.PathLike[str], what: str = "file", *, secret: bool = False) -> None:
    """Refuse `path` unless it and every directory above it are root's (see the module doc).

    `what` names the file in the message ("spec", "saved plan", "replication password file").
    `secret=True`: group/others may not read it either.  Raises UntrustedError."""
    p = os.fspath(path)
    real, st = _walk(what, p, p, [0])
    if st is not None:
        _refuse(what, p, p if real == os.path.abspath(p) else real, st, secret)


def check_dirs(path: str | os.PathLike[str], what: str = "file") -> None:
    """Only the directories above `path` (for a reader that checks the file itself on the
    descriptor it opened, as `peer.auth.load_secret` does)."""
    p = os.fspath(path)
    real, st = _walk(what, p, os.path.dirname(os.path.abspath(p)), [0])
    if st is not None and stat.S_ISDIR(st.st_mode):
        _check_dir(what, p, real, st, os.path.basename(p))


def check_tree(top: str, what: str, files: Callable[[str], bool] = lambda _rel: True, limit: int = 100_000) -> None:
    """`top` (checked with `check_file`), every directory below it, and each file whose path
    relative to `top` satisfies `files`; symbolic links are checked where they lead.  At most
    `limit` entries are checked (then refused: a tree that big is not one a spec is read from)."""
    check_file(top, what)
    seen = 0
    for d, dirs, names in os.walk(top):
        checked = [os.path.join(d, n) for n in dirs]
        checked += [os.path.join(d, n) for n in names if files(os.path.relpath(os.path.join(d, n), top))]
        seen += len(checked)
        if seen > limit:
            raise UntrustedError(f"refusing the {what} {top}: more than {limit} entries to check")
        for full in checked:
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                check_file(full, what)
            else:
                _refuse(what, full, full, st)
