"""The agent's revisions, as Flux reports them: last attempted (the newest spec it read,
valid or not) and last applied (the newest it converged on).  Kept in memory and, with a
state directory, in DIR/state-NODE.json (replaced atomically) for `reconciler status`.
A revision is the git commit, or `sha256:<spec digest>` for a plain file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

log = logging.getLogger("reconciler")

DEFAULT_STATE_DIR = "/var/lib/reconciler"
STATE_FORMAT = 1


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


def read_state(state_dir: str, node: str) -> Revisions | None:
    try:
        with open(state_path(state_dir, node)) as f:
            doc = json.load(f)
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
            os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.state_dir)
            with os.fdopen(fd, "w") as f:
                json.dump({"format": STATE_FORMAT, **asdict(self.rev)}, f, indent=2)
                f.write("\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, state_path(self.state_dir, self.rev.node))
        except OSError as e:
            if not self._warned:
                log.warning(f"{self.rev.node}: cannot write the state file in {self.state_dir}: {e.strerror or e}")
            self._warned = True
