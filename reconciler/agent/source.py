"""Where the agent reads its spec: a plain file, or a file as committed in a git work tree.

`GitSource` reads `git show <commit>:./PATH` at the checked-out HEAD (argv lists with
timeouts, never a shell): uncommitted edits are ignored, and reported by `uncommitted()`.
`changed()` is cheap (a stat, or `git rev-parse HEAD` at most every POLL_S unless a
watch event arrived), so the agent and its watcher thread may both call it.  Both
sources `load()` through `reconciler.spec.load.load_spec`, the git one with the commit as
the `LoadedSpec`'s revision.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

from reconciler.model import NodeObservation
from reconciler.plan.agreement import spec_roles
from reconciler.spec import LoadedSpec
from reconciler.spec.load import MAX_SPEC_BYTES, load_spec

GIT_TIMEOUT_S = 10.0
POLL_S = 0.5  # the cheap `git rev-parse HEAD` poll, on top of watching .git
# No index.lock taken by `git status` (it would make a concurrent `git pull` fail); no prompts.
GIT_ENV = {"GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat"}


class SourceError(Exception):
    """The spec could not be read from its source (not a spec problem: a git problem)."""


class FileSource:
    attempted: str | None = None  # a plain file has no revision before it parses

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._mark = self._stat()

    def describe(self) -> str:
        return self.path

    def _stat(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self.path)
            return (st.st_mtime, st.st_size)
        except OSError:
            return None

    def load(self) -> LoadedSpec:
        """The spec in the file (revision None); a SpecError names FILE:LINE:COL."""
        self._mark = self._stat()
        return load_spec(self.path)

    def changed(self) -> bool:
        return self._stat() != self._mark

    def notify(self) -> None:
        pass

    def watch(self) -> tuple[list[str], bool]:
        return [os.path.dirname(self.path)], False

    def relevant(self, path: str) -> bool:
        return os.path.abspath(path) == self.path

    def uncommitted(self) -> bool:
        return False


class GitSource:
    def __init__(self, repo: str, path: str, rev: str = "HEAD") -> None:
        self.repo, self.rev = os.path.abspath(repo), rev
        self.path = os.path.normpath(path).lstrip("/")
        if self.path.startswith(".."):
            raise SourceError(f"--path {path}: must be inside {self.repo}")
        self.git_dir = self._git("rev-parse", "--absolute-git-dir").stdout.decode().strip()
        common = self._git("rev-parse", "--git-common-dir").stdout.decode().strip()
        self.common_dir = os.path.abspath(os.path.join(self.repo, common))
        self.worktree_file = os.path.join(self.repo, self.path)
        self._lock = threading.Lock()
        self.attempted: str | None = None  # the commit last read (valid or not)
        self._loaded: str | None = None
        self._seen: tuple[float, str | None] = (0.0, None)
        self._event = True

    def describe(self) -> str:
        return f"{self.worktree_file} as committed at {self.rev}"

    def _git(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """git with argv and a timeout; stdout kept as bytes (the spec's exact bytes)."""
        cmd = ["git", "-C", self.repo, *argv]
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=GIT_TIMEOUT_S,
                               env={**os.environ, **GIT_ENV, "LC_ALL": "C"})
        except FileNotFoundError:
            raise SourceError("git is not installed") from None
        except subprocess.TimeoutExpired:
            raise SourceError(f"{' '.join(cmd)}: timed out after {GIT_TIMEOUT_S:g} s") from None
        if check and r.returncode != 0:
            raise SourceError(f"{' '.join(cmd)}: {_err(r)}")
        return r

    def resolve(self, rev: str | None = None) -> str:
        """The full commit id of `rev` (default: the source's revision, normally HEAD)."""
        want = rev or self.rev
        r = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{want}^{{commit}}", check=False)
        if r.returncode != 0:
            raise SourceError(f"{self.repo}: no commit {want!r}" + (f" ({_err(r)})" if r.stderr.strip() else ""))
        return r.stdout.decode().strip()

    def read(self, commit: str) -> bytes:
        r = self._git("cat-file", "blob", f"{commit}:./{self.path}", check=False)
        if r.returncode != 0:
            raise SourceError(f"{self.path} is not committed at {commit[:12]} in {self.repo}")
        data = r.stdout
        if len(data) > MAX_SPEC_BYTES:
            raise SourceError(f"{self.path} at {commit[:12]} is larger than {MAX_SPEC_BYTES >> 10} KiB")
        return data

    def load(self) -> LoadedSpec:
        """The spec at the revision; a SpecError names FILE@COMMIT:LINE:COL, a SourceError a git problem."""
        commit = self.resolve()
        with self._lock:
            self._loaded = self.attempted = commit
            self._seen, self._event = (time.monotonic(), commit), False
        name = f"{self.worktree_file}@{commit[:12]}"
        return load_spec(name, self.read(commit), revision=commit)

    def notify(self) -> None:
        """A watch event on .git: the next `changed()` asks git at once."""
        self._event = True

    def changed(self) -> bool:
        with self._lock:
            at, head = self._seen
            if self._event or time.monotonic() - at >= POLL_S:
                self._event = False
                try:
                    head = self.resolve()
                except SourceError:
                    head = None
                self._seen = (time.monotonic(), head)
            return head is not None and head != self._loaded

    def watch(self) -> tuple[list[str], bool]:
        heads = os.path.join(self.common_dir, "refs", "heads")
        dirs = {self.git_dir, heads, self.common_dir, os.path.dirname(self.worktree_file)}
        return sorted(d for d in dirs if os.path.isdir(d)), False

    def relevant(self, path: str) -> bool:
        path = os.path.abspath(path)
        if path == self.worktree_file or os.path.basename(path) in ("HEAD", "packed-refs"):
            return True
        return path.startswith(os.path.join(self.common_dir, "refs") + os.sep)

    def uncommitted(self) -> bool:
        """The work tree's copy of the file differs from HEAD (it is ignored until committed)."""
        r = self._git("status", "--porcelain", "--untracked-files=no", "--", self.path, check=False)
        return r.returncode == 0 and bool(r.stdout.strip())


SpecSource = FileSource | GitSource


def _err(r: subprocess.CompletedProcess[bytes]) -> str:
    lines = r.stderr.decode("utf-8", "replace").strip().splitlines()
    return f"exit {r.returncode}" + (f": {lines[-1]}" if lines else "")


def stamp(obs: NodeObservation, spec: LoadedSpec) -> NodeObservation:
    """The observation, saying which spec (digest, revision, roles) this node applies."""
    return obs.model_copy(update={"spec_digest": spec.digest, "revision": spec.revision,
                                  "spec_roles": spec_roles(spec.model)})
