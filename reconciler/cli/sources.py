"""The spec's source from the command line: FILE, or `--git DIR --path FILE [--rev REV]`.

`load` is how every command reads its spec: through the source, to a `LoadedSpec`, with
any spec or git problem turned into the one-line error and exit 1 (`spec_errors`).  The
same source is written into saved plans (`to_doc`/`from_doc`) so that `apply` reads the
spec again from where `plan` read it, and can tell whether it changed.

Sources are `strict` (`reconciler.trust`: a spec, repository, ips_file or secret that is
not root's is refused with the fix) except for `plan --observed`, which runs no command.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from reconciler import trust
from reconciler.agent.source import FileSource, GitSource, SourceError, SpecSource
from reconciler.cli.common import UserError, default_node
from reconciler.spec import LoadedSpec
from reconciler.spec.load import SpecError


def from_args(args: argparse.Namespace, file_default: str | None = None, strict: bool = True) -> SpecSource:
    git, path, rev = getattr(args, "git", None), getattr(args, "path", None), getattr(args, "rev", None)
    file = args.file if args.file != file_default or git is None else None
    if git is None:
        if path is not None or rev is not None:
            raise UserError("--path and --rev need --git DIR")
        if file is None:
            raise UserError("which spec? give FILE, or --git DIR --path FILE")
        return FileSource(file, strict)
    if file is not None:
        raise UserError(f"give either FILE ({file}) or --git DIR --path FILE, not both")
    if path is None:
        raise UserError("--git needs --path FILE: the spec's path inside the work tree")
    try:
        return GitSource(git, path, rev or "HEAD", strict)
    except SourceError as e:
        raise UserError(f"--git {git}: {e}") from None
    except trust.UntrustedError as e:
        raise UserError(str(e)) from None


@contextmanager
def spec_errors(source: SpecSource) -> Iterator[None]:
    """A SpecError (`FILE:LINE:COL: key: reason`) or a git problem becomes the one-line UserError."""
    try:
        yield
    except SpecError as e:
        raise UserError(str(e)) from None
    except SourceError as e:
        raise UserError(f"{source.describe()}: {e}") from None
    except trust.UntrustedError as e:
        raise UserError(str(e)) from None


def load(source: SpecSource) -> LoadedSpec:
    with spec_errors(source):
        return source.load()


def node_of(spec: LoadedSpec, node: str | None, source: SpecSource) -> str:
    """`--node`, or this host's name; it must be one of the spec's nodes."""
    node = node or default_node()
    if node not in spec.model.nodes:
        raise UserError(f"{source.describe()}: node {node!r} is not in nodes ({', '.join(spec.model.nodes)}); use --node")
    return node


def to_doc(source: SpecSource, loaded: LoadedSpec) -> dict[str, str | None]:
    if isinstance(source, GitSource):
        return {"type": "git", "repo": source.repo, "path": source.path, "rev": source.rev, "commit": loaded.revision}
    return {"type": "file", "path": os.path.abspath(source.path)}


def from_doc(doc: dict[str, Any]) -> SpecSource:
    try:
        if doc.get("type") == "git":
            return GitSource(str(doc["repo"]), str(doc["path"]), str(doc.get("rev") or "HEAD"))
        if doc.get("type") == "file":
            return FileSource(str(doc["path"]))
    except SourceError as e:
        raise UserError(f"the saved plan's spec source: {e}") from None
    except trust.UntrustedError as e:
        raise UserError(str(e)) from None
    except KeyError as e:
        raise UserError(f"the saved plan's spec source has no {e.args[0]!r}") from None
    raise UserError(f"the saved plan's spec source is of unknown type {doc.get('type')!r}")
