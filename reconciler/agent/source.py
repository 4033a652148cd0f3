"""Where the agent reads its spec: a plain file, or a file as committed in a git work tree.

`GitSource` reads `git show <commit>:./PATH` at the checked-out HEAD (argv lists with
timeouts, never a shell): uncommitted edits are ignored, and reported by `uncommitted()`.
`changed()` is cheap (a stat, or `git rev-parse HEAD` at most every POLL_S unless a
watch event arrived), so the agent and its watcher thread may both call it.  Both
sources `load()` through `reconciler.spec.load.load_spec`, the git one with the commit as
the `LoadedSpec`'s revision.

Root acts only on what root controls (`reconciler.trust`): a `strict` source (the default;
`plan --observed` is the one command that reads a spec without) refuses a spec file, a git
work tree or git directory, an ips_file, a replication password file or a peer secret that
is not root's, before anything in it is used.  git itself runs with hooks, fsmonitor and
every transport off, and reads only the repository's own (checked) config: not the system
or global one (a `sudo -E` HOME would bring a user's), so nothing in any config makes it
run a program.  `--path` is checked by component: `..foo` is a file name, `../x` and an
absolute path outside the work tree are refused, and the file is read from the commit's
tree, where a symbolic link is never followed (one at the path itself is refused).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

from reconciler import trust
from reconciler.model import NodeObservation
from reconciler.plan.agreement import spec_roles
from reconciler.spec import LoadedSpec
from reconciler.spec.load import MAX_SPEC_BYTES, load_spec

GIT_TIMEOUT_S = 10.0
POLL_S = 0.5  # the cheap `git rev-parse HEAD` poll, on top of watching .git
# No index.lock taken by `git status` (it would make a concurrent `git pull` fail); no prompts.
GIT_ENV = {"GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
# No hook, no fsmonitor program, no transport (a partial clone's lazy fetch would run ssh).
GIT_SAFE = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-c", "protocol.allow=never")


class SourceError(Exception):
    """The spec could not be read from its source (not a spec problem: a git problem)."""


def check_referenced(spec: LoadedSpec) -> None:
    """The secrets the spec names must be root's and readable by root only (the ips_file is
    checked by `load_spec(strict=True)`); raises trust.UntrustedError."""
    s = spec.model
    if s.postgres is not None and s.postgres.password_file is not None:
        trust.check_file(s.postgres.password_file, "replication password file", secret=True)
    trust.check_file(s.agent.peer_secret_file, "peer secret", secret=True)


class FileSource:
    attempted: str | None = None  # a plain file has no revision before it parses

    def __init__(self, path: str, strict: bool = True) -> None:
        self.path = os.path.abspath(path)
        self.strict = strict
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
        if not self.strict:
            return load_spec(self.path)
        trust.check_file(self.path, "spec")
        loaded = load_spec(self.path, strict=True)
        check_referenced(loaded)
        return loaded

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
    def __init__(self, repo: str, path: str, rev: str = "HEAD", strict: bool = True) -> None:
        self.repo, self.rev, self.strict = os.path.abspath(repo), rev, strict
        self.path = inside(self.repo, path)
        if strict:
            trust.check_file(self.repo, "git work tree")
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
        cmd = ["git", *GIT_SAFE, "-C", self.repo, *argv]
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

    def check(self) -> None:
        """The work tree's directory chain and the git directories must be root's: every
        directory in them, and every file but the (content-addressed) objects."""
        trust.check_file(self.repo, "git work tree")
        top = self._git("rev-parse", "--show-toplevel").stdout.decode().strip()
        dotgit = os.path.join(top, ".git")
        if os.path.isfile(dotgit):  # `gitdir: ...` of a linked work tree
            trust.check_file(dotgit, "git repository")
        for d in dict.fromkeys((self.git_dir, self.common_dir)):
            trust.check_tree(d, "git repository", _checked_git_file)

    def read(self, commit: str) -> bytes:
        """The bytes of the regular file at PATH in `commit`'s tree (no symbolic link followed)."""
        r = self._git("ls-tree", "-z", "--end-of-options", commit, "--", self.path, check=False)
        entry = r.stdout.split(b"\0")[0].decode("utf-8", "replace") if r.returncode == 0 else ""
        meta, _, name = entry.partition("\t")
        fields = meta.split(" ")
        if name != self.path or len(fields) != 3:
            raise SourceError(f"{self.path} is not committed at {commit[:12]} in {self.repo}")
        mode, kind, oid = fields
        if kind != "blob" or mode not in ("100644", "100755"):
            what = {"120000": "a symbolic link", "160000": "a submodule", "040000": "a directory"}.get(mode, mode)
            raise SourceError(f"{self.path} at {commit[:12]} in {self.repo} is {what}, not a regular file; "
                              "give the path of the file itself")
        r = self._git("cat-file", "blob", oid, check=False)
        if r.returncode != 0:
            raise SourceError(f"{self.path} is not committed at {commit[:12]} in {self.repo}")
        data = r.stdout
        if len(data) > MAX_SPEC_BYTES:
            raise SourceError(f"{self.path} at {commit[:12]} is larger than {MAX_SPEC_BYTES >> 10} KiB")
        return data

    def load(self) -> LoadedSpec:
        """The spec at the revision; a SpecError names FILE@COMMIT:LINE:COL, a SourceError a git problem."""
        if self.strict:
            self.check()
        commit = self.resolve()
        with self._lock:
            self._loaded = self.attempted = commit
            self._seen, self._event = (time.monotonic(), commit), False
        name = f"{self.worktree_file}@{commit[:12]}"
        loaded = load_spec(name, self.read(commit), revision=commit, strict=self.strict)
        if self.strict:
            check_referenced(loaded)
        return loaded

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
        dirs = {self.git_dir, heads, self.common_dir}
        spec_dir = os.path.realpath(os.path.dirname(self.worktree_file))
        if spec_dir == os.path.realpath(self.repo) or spec_dir.startswith(os.path.realpath(self.repo) + os.sep):
            dirs.add(os.path.dirname(self.worktree_file))  # not through a symbolic link out of the work tree
        return sorted(d for d in dirs if os.path.isdir(d)), False

    def relevant(self, path: str) -> bool:
        path = os.path.abspath(path)
        if path == self.worktree_file or os.path.basename(path) in ("HEAD", "packed-refs"):
            return True
        return path.startswith(os.path.join(self.common_dir, "refs") + os.sep)

    def uncommitted(self) -> bool:
        """The work tree's copy of the file differs from HEAD (it is ignored until committed)."""
        r = self._git("status", "--porcelain", "--untracked-files=no", "--ignore-submodules=all", "--", self.path,
                      check=False)
        return r.returncode == 0 and bool(r.stdout.strip())


SpecSource = FileSource | GitSource


def inside(repo: str, path: str) -> str:
    """`path` relative to the work tree `repo`, checked by component: a `..` component that
    leaves it, or an absolute path outside it, is refused; `..foo` is just a file name."""
    rel = os.path.normpath(path)
    if os.path.isabs(rel):
        for base in dict.fromkeys((repo, os.path.realpath(repo))):
            if os.path.relpath(rel, base).split(os.sep)[0] != "..":
                rel = os.path.relpath(rel, base)
                break
        else:
            raise SourceError(f"--path {path}: outside the work tree {repo}")
    if rel.split(os.sep)[0] in ("..", "."):
        raise SourceError(f"--path {path}: must name a file inside the work tree {repo}")
    return rel


def _checked_git_file(rel: str) -> bool:
    """Which files of a git directory the trust check looks at: all but the objects
    themselves (content-addressed, and many); objects/info (alternates) is checked."""
    parts = rel.split(os.sep)
    return parts[0] != "objects" or parts[1:2] == ["info"]


def _err(r: subprocess.CompletedProcess[bytes]) -> str:
    lines = r.stderr.decode("utf-8", "replace").strip().splitlines()
    return f"exit {r.returncode}" + (f": {lines[-1]}" if lines else "")


def stamp(obs: NodeObservation, spec: LoadedSpec) -> NodeObservation:
    """The observation, saying which spec (digest, revision, roles) this node applies."""
    return obs.model_copy(update={"spec_digest": spec.digest, "revision": spec.revision,
                                  "spec_roles": spec_roles(spec.model)})
