"""Round-trip edits of the desired-state file: change the `primary:` value and nothing else.

The edit splices the original text at the span PyYAML reports for the value, so comments,
key order, indentation, quoting, line endings and a trailing comment's column stay as they
were; `maintenance on` keeps the previous primary in a comment line just above `primary:`.
Every edit is checked to change exactly that value; writes are atomic and keep the mode.
"""

from __future__ import annotations

import difflib
import errno
import json
import os
import re
import stat
from dataclasses import dataclass

import yaml

from reconciler import safefile

MEMO_PREFIX = "# reconciler maintenance: previous primary "
_MEMO_RE = re.compile(r"[ \t]*#[ \t]*reconciler maintenance: previous primary ([A-Za-z0-9][A-Za-z0-9_.-]*)")
_PLAIN_RE = re.compile(r"^[A-Za-z0-9/][A-Za-z0-9_./:-]*(?<!:)$")  # plain when also read as a string
_STR_TAG = "tag:yaml.org,2002:str"


class EditError(ValueError):
    """An edit that cannot be made safely; `str()` is the one-line reason."""


@dataclass(frozen=True)
class PrimarySite:
    """Where `primary:` is in the text: the value's span and style, the key's line."""

    value: str
    start: int  # index of the value's first character (its opening quote, if quoted)
    end: int  # index just past the value
    style: str | None  # None (plain), "'" or '"'
    line_start: int  # index of the start of the key's line
    indent: str  # the text before the key on its line ("" for a top-level block mapping)
    memo: str | None  # the previous primary remembered by `maintenance on`, if any
    memo_start: int | None  # index of the start of the memo line


def locate(text: str) -> PrimarySite:
    """Find the top-level `primary:` value (the file must already be a valid spec)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise EditError(f"cannot parse the file: {' '.join(str(e).split())}") from None
    if not isinstance(root, yaml.MappingNode):
        raise EditError("the top level is not a mapping")
    found = [(k, v) for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "primary"]
    if len(found) != 1 or not isinstance(found[0][1], yaml.ScalarNode):
        raise EditError("expected exactly one `primary:` key with a plain value")
    key, val = found[0]
    if val.style not in (None, "'", '"'):
        raise EditError("`primary:` is a block scalar (| or >); write it as `primary: NAME`")
    if val.start_mark.line != key.start_mark.line:
        raise EditError("`primary:` and its value must be on one line")
    line_start = text.rfind("\n", 0, key.start_mark.index) + 1
    memo, memo_start = _memo_above(text, line_start)
    return PrimarySite(
        value=val.value, start=val.start_mark.index, end=val.end_mark.index, style=val.style,
        line_start=line_start, indent=text[line_start:key.start_mark.index], memo=memo, memo_start=memo_start,
    )


def _memo_above(text: str, line_start: int) -> tuple[str | None, int | None]:
    if line_start == 0:
        return None, None
    prev_start = text.rfind("\n", 0, line_start - 1) + 1
    m = _MEMO_RE.match(text, prev_start, line_start)
    return (m.group(1), prev_start) if m else (None, None)


def render_scalar(value: str, style: str | None) -> str:
    """`value` as a YAML scalar read back as the same string, in `style` where possible."""
    if style == "'" and "'" not in value and value.isprintable():
        return f"'{value}'"
    resolved = yaml.resolver.Resolver().resolve(yaml.ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    if style is None and _PLAIN_RE.match(value) and resolved == _STR_TAG:
        return value
    return json.dumps(value)  # a JSON string is a valid double-quoted YAML scalar


def set_primary(text: str, node: str, remember: str | None = None) -> str:
    """The text with `primary:` set to `node`.  With `remember`, a memo line naming it is put
    above `primary:` (replacing any); without it, an existing memo line is dropped."""
    site = locate(text)
    new_value = render_scalar(node, site.style)
    tail = re.match(r" +(?=#)", text[site.end:])
    cut = site.end
    if tail:  # keep the trailing comment in its column when there is room
        gap = max(1, len(tail.group()) - (len(new_value) - (site.end - site.start)))
        new_value += " " * gap
        cut += len(tail.group())
    line_from = site.memo_start if site.memo_start is not None else site.line_start
    memo = ""
    if remember is not None:
        if site.indent.strip(" \t"):
            raise EditError("cannot add the maintenance note: `primary:` does not start its line")
        nl = "\r\n" if "\r\n" in text else "\n"
        memo = f"{site.indent}{MEMO_PREFIX}{remember} (`reconciler maintenance off` restores it){nl}"
    return text[:line_from] + memo + text[site.line_start : site.start] + new_value + text[cut:]


def check_only_primary(old: str, new: str, node: str) -> None:
    """Raise EditError unless `new` reads as `old` with `primary` set to `node`."""
    try:
        before, after = yaml.safe_load(old), yaml.safe_load(new)
    except yaml.YAMLError as e:
        raise EditError(f"the edited text does not parse: {' '.join(str(e).split())}") from None
    if not isinstance(before, dict):
        raise EditError("the top level is not a mapping")
    if after != {**before, "primary": node}:
        raise EditError("the edit would change more than `primary:`; file left untouched")


def unified_diff(old: str, new: str, path: str) -> str:
    """A `git diff`-like unified diff of `path` from `old` to `new` ("" when equal)."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}"
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def write_atomic(path: str, data: bytes) -> None:
    """Replace the file at `path` (a symlink's target) with `data`, keeping its mode (and owner
    where allowed): through `reconciler.safefile` (a new temporary file of a random name in the
    same directory, O_EXCL|O_NOFOLLOW, fsync, rename over, fsync the directory)."""
    folder, name = os.path.split(os.path.realpath(path))
    with safefile.directory(folder) as dfd:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        allowed = os.geteuid() in (0, st.st_uid) and (os.geteuid() == 0 or st.st_gid in (os.getegid(), *os.getgroups()))
        owner = (st.st_uid, st.st_gid) if allowed else None  # else it becomes ours, as with any editor's save
        safefile.replace(dfd, name, data, stat.S_IMODE(st.st_mode), owner)


def create_new(path: str, data: bytes, mode: int = 0o644) -> None:
    """Create `path` with `data`, atomically, never replacing an existing file or link
    (FileExistsError).  `mode` is masked by the umask."""
    umask = os.umask(0)
    os.umask(umask)
    folder, name = safefile.split_real(path)
    with safefile.directory(folder) as dfd:
        safefile.create_new(dfd, name, data, mode & ~umask)
