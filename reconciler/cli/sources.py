"""The spec's source from the command line: FILE, or `--git DIR --path FILE [--rev REV]`.

The same source is written into saved plans (`to_doc`/`from_doc`) so that `apply` reads
the spec again from where `plan` read it, and can tell whether it changed.
"""

from __future__ import annotations

import argparse
import os

from reconciler.agent.source import FileSource, GitSource, Loaded, SourceError, SpecSource
from reconciler.cli.main import UserError
from reconciler.spec.load import SpecError


def from_args(args: argparse.Namespace, file_default: str | None = None) -> SpecSource:
    git, path, rev = getattr(args, "git", None), getattr(args, "path", None), getattr(args, "rev", None)
    file = args.file if args.file != file_default or git is None else None
    if git is None:
        if path is not None or rev is not None:
            raise UserError("--path and --rev need --git DIR")
        if file is None:
            raise UserError("which spec? give FILE, or --git DIR --path FILE")
        return FileSource(file)
    if file is not None:
        raise UserError(f"give either FILE ({file}) or --git DIR --path FILE, not both")
    if path is None:
        raise UserError("--git needs --path FILE: the spec's path inside the work tree")
    try:
        return GitSource(git, path, rev or "HEAD")
    except SourceError as e:
        raise UserError(f"--git {git}: {e}") from None


def load(source: SpecSource) -> Loaded:
    try:
        return source.load()
    except SpecError as e:
        raise UserError(str(e)) from None
    except SourceError as e:
        raise UserError(f"{source.describe()}: {e}") from None


def to_doc(source: SpecSource, loaded: Loaded) -> dict[str, str | None]:
    if isinstance(source, GitSource):
        return {"type": "git", "repo": source.repo, "path": source.path, "rev": source.rev, "commit": loaded.revision}
    return {"type": "file", "path": os.path.abspath(source.path)}


def from_doc(doc: dict) -> SpecSource:
    try:
        if doc.get("type") == "git":
            return GitSource(str(doc["repo"]), str(doc["path"]), str(doc.get("rev") or "HEAD"))
        if doc.get("type") == "file":
            return FileSource(str(doc["path"]))
    except SourceError as e:
        raise UserError(f"the saved plan's spec source: {e}") from None
    except KeyError as e:
        raise UserError(f"the saved plan's spec source has no {e.args[0]!r}") from None
    raise UserError(f"the saved plan's spec source is of unknown type {doc.get('type')!r}")
