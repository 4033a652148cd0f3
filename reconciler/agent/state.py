"""The agent's revisions, as Flux reports them: last attempted (the newest spec it read,
valid or not) and last applied (the newest it converged on).  Kept in memory and, with a
state directory, in DIR/state-NODE.json (replaced atomically) for `reconciler status`.
The file is mode 0600 in a directory of mode 0700 (created so, tightened if looser and
ours); both written and read through `reconciler.safefile` (no link followed).
A revision is the git commit, or `sha256:<spec digest>` for a plain file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from reconciler import safefile

log = logging.getLogger("reconciler")

DEFAULT_STATE_DIR = "/var/lib/reconciler"
STATE_FORMAT = 1
STATE_MODE, STATE_DIR_MODE = 0o600, 0o700
MAX_STATE_BYTES = 1 << 20


@dataclass
class Revisions:
    node: str
    source: str
    current: str | None = None  # the revision the agent reconciles now (its last good one)
    attempted: str | None = None
    attempted_at: float | None = None
    attempted_error: str | None = None  # why the attempted revision was refused, if it was
    applied: str | None = None
    applied_at: float | None = None
    uncommitted: bool = False  # the work tree's copy differs from the commit (ignored)


def revision_label(revision: str | None, digest: str) -> str:
    return revision or f"sha256:{digest}"


def short(label: str | None) -> str:
    """12 hex digits of a commit, or `sha256:` and 12 of a digest."""
    if not label:
        return "none"
    return label[:19] if label.startswith("sha256:") else label[:12]


def state_path(state_dir: str, node: str) -> str:
    return os.path.join(state_dir, f"state-{node}.json")


@contextlib.contextmanager
def private_dir(path: str) -> Iterator[int]:
    """A descriptor of the state directory `path`: created mode 0700 (its parents as the umask
    allows), set to 0700 when it is ours and looser; its last component is never a link."""
    try:
        os.mkdir(path, STATE_DIR_MODE)
    except FileNotFoundError:
        os.makedirs(path, STATE_DIR_MODE, exist_ok=True)
    except FileExistsError:
        pass
    with safefile.directory(path) as dfd:
        st = os.fstat(dfd)
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.fchmod(dfd, stat.S_IMODE(st.st_mode) & STATE_DIR_MODE)
        yield dfd


def read_state(state_dir: str, node: str) -> Revisions | None:
    folder, name = safefile.split_real(state_path(state_dir, node))
    try:
        with safefile.directory(folder) as dfd:
            got = safefile.read(dfd, name, MAX_STATE_BYTES)
        if got is None:
            return None
        doc = json.loads(got[0])
        doc.pop("format", None)
        return Revisions(**doc)
    except (OSError, ValueError, TypeError):
        return None


class RevisionState:
    """The agent's copy; every change is saved when a state directory was given."""

    def __init__(self, node: str, source: str, state_dir: str | None) -> None:
        old = read_state(state_dir, node) if state_dir else None
        self.rev = Revisions(node=node, source=source)
        if old is not None and old.source == source:
            self.rev.applied, self.rev.applied_at = old.applied, old.applied_at
        self.state_dir = state_dir
        self._lock = threading.Lock()
        self._warned = False

    def attempt(self, revision: str | None, error: str | None = None) -> None:
        if (revision, error) != (self.rev.attempted, self.rev.attempted_error):
            self._set(attempted=revision, attempted_at=time.time(), attempted_error=error)

    def running(self, revision: str) -> None:
        if revision != self.rev.current:
            self._set(current=revision)

    def applied(self, revision: str) -> None:
        if revision != self.rev.applied:
            self._set(applied=revision, applied_at=time.time())

    def uncommitted(self, flag: bool) -> None:
        if flag != self.rev.uncommitted:
            self._set(uncommitted=flag)

    def _set(self, **changes: object) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self.rev, k, v)
            self._save()

    def _save(self) -> None:
        if self.state_dir is None:
            return
        try:
            data = (json.dumps({"format": STATE_FORMAT, **asdict(self.rev)}, indent=2) + "\n").encode()
            with private_dir(self.state_dir) as dfd:
                safefile.replace(dfd, os.path.basename(state_path(self.state_dir, self.rev.node)), data, STATE_MODE)
        except OSError as e:
            if not self._warned:
                log.warning(f"{self.rev.node}: cannot write the state file in {self.state_dir}: {e.strerror or e}")
            self._warned = True
