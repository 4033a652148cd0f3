"""Load the desired-state file: bytes -> YAML nodes (with positions) -> `Spec` -> `LoadedSpec`.

Every problem becomes one `SpecError` whose `str()` is a single `FILE:LINE:COL: key.path:
reason` line.  The YAML is composed by PyYAML's SafeLoader so each value keeps its mark;
anchors/aliases, duplicate keys, non-string keys and merge keys are refused here (PyYAML
would silently accept them): with no alias, a "billion laughs" file cannot expand.
Pydantic's errors are translated in `reconciler.spec.errors`.  No message quotes the file:
PyYAML's problems quote the offending character or tag, so quoted parts are dropped
(`_scrub`); the position says where.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import stat
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from reconciler import trust
from reconciler.address import Address
from reconciler.spec import LoadedSpec
from reconciler.spec.addresses import (
    MAX_TOTAL,
    AddressError,
    Block,
    find_overlap,
    first_over_total,
    group_expand,
    ips_file_entries,
    parse_entry,
)
from reconciler.spec.errors import Doc, SpecError, describe, from_validation_error
from reconciler.spec.models import Loc, Spec, loc_str

MAX_SPEC_BYTES = 1 << 20  # the spec file; PyYAML composes ~3 s/MiB, so keep it small
MAX_IPS_BYTES = 4 << 20  # the ips_file: plain lines, parsed fast
IPS_LINE_REFUSED = ("not a floating address entry ({why}): expected one address with /prefix or a range "
                    "(e.g. 192.0.2.10/24, 192.0.2.10-192.0.2.20/24) per line; the line is not shown")
MAX_DEPTH = 64  # YAML nesting

__all__ = ["SpecError", "load_spec", "MAX_SPEC_BYTES", "MAX_IPS_BYTES"]


def load_spec(path: str, data: bytes | None = None, revision: str | None = None, *, strict: bool = False) -> LoadedSpec:
    """The one way to load a spec: read, parse and check the file at `path` (and its ips_file,
    if any), or the bytes `data` already read (from git, or an edit to check before writing
    it) that `path` names in errors.  `revision` is the git commit the bytes come from.
    `strict`: the ips_file must be root's (`reconciler.trust`; the caller checks `path`)."""
    if data is None:
        data = read_capped(path, MAX_SPEC_BYTES, path, "(file)")
    doc = Doc(path)
    root = _compose(_decode(data, path, "(file)"), path)
    if root is None:
        raise SpecError(path, 1, 1, "(file)", "empty file: expected a mapping with cluster, nodes, primary, ...")
    if not isinstance(root, yaml.MappingNode):
        got = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
        raise SpecError(path, *_pos(root.start_mark), "(file)", f"the top level must be a mapping of keys, got {got}")
    obj = _Builder(doc).build(root)
    try:
        spec = Spec.model_validate(obj, strict=True)
    except ValidationError as e:
        raise from_validation_error(e, doc) from None
    addresses, ips_bytes = _addresses(spec, doc, strict)
    digest = hashlib.sha256(data + ips_bytes).hexdigest()
    return LoadedSpec(model=spec, addresses=addresses, digest=digest, path=path, revision=revision)


def read_capped(path: str, cap: int, err_file: str, err_key: str, at: tuple[int, int] = (1, 1)) -> bytes:
    """The bytes of a regular file of at most `cap` bytes; else a SpecError at `err_file:at`.
    O_NONBLOCK so that a FIFO given by mistake is refused instead of blocking the open."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SpecError(err_file, *at, err_key, f"{path} is not a regular file")
            data = f.read(cap + 1)
    except OSError as e:
        raise SpecError(err_file, *at, err_key, f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > cap:
        raise SpecError(err_file, *at, err_key, f"{path} is larger than the {cap // 1024} KiB limit")
    return data


def _decode(data: bytes, path: str, key: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SpecError(path, line, col, key, f"not valid UTF-8 (byte 0x{data[e.start]:02x})") from None


def _pos(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


class _Refused(yaml.MarkedYAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases (no "billion laughs") and deep nesting."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused(problem="YAML anchors and aliases (&name, *name) are not allowed in a spec",
                           problem_mark=event.start_mark)
        if self._depth >= MAX_DEPTH:
            raise _Refused(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str, path: str) -> yaml.Node | None:
    loader = None
    try:
        loader = _Loader(text)
        return loader.get_single_node()
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        ch = e.character if isinstance(e.character, int) else ord(e.character)
        raise SpecError(path, line, col, "yaml", f"character U+{ch:04X} is not allowed in YAML") from None
    except yaml.MarkedYAMLError as e:
        raise _syntax_error(e, path) from None
    except yaml.YAMLError as e:
        raise SpecError(path, 1, 1, "yaml", _scrub(str(e))) from None
    finally:
        if loader is not None:
            loader.dispose()


# A quoted part of a PyYAML message: the offending character, tag or anchor, from the file.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
# What PyYAML quotes that is grammar, not the file: token names and flow indicators.
_GRAMMAR = re.compile(r"'(<[a-z ]+>|[\[\]{},:?\-|>!&*])'")


def _scrub(message: str) -> str:
    """A PyYAML message without what it quotes from the file (token names kept), one line."""
    out = _QUOTED.sub(lambda m: m.group(0) if _GRAMMAR.fullmatch(m.group(0)) else "", message)
    out = " ".join(out.split())
    out = re.sub(r"\bfound(?= that| ?$| ?\()", "found a character", out)
    return out.replace(" ,", ",")


def _syntax_error(e: yaml.MarkedYAMLError, path: str) -> SpecError:
    mark = e.problem_mark or e.context_mark
    if "'\\t'" in (e.problem or ""):
        return SpecError(path, *_pos(mark), "yaml", "tab character used for indentation; YAML indents with spaces")
    reason = problem = _scrub(e.problem or "syntax error")
    if e.context:
        where = ""
        if e.context_mark is not None and (mark is None or e.context_mark.line != mark.line):
            where = f" at line {e.context_mark.line + 1}"
        reason = f"{problem} ({_scrub(e.context)}{where})"
    return SpecError(path, *_pos(mark), "yaml", " ".join(reason.split()))


_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


class _Builder:
    """Plain Python data from composed nodes, recording each value's position in `doc`."""

    def __init__(self, doc: Doc) -> None:
        self.doc = doc
        self.constructor = yaml.constructor.SafeConstructor()  # for scalars (int, bool, ...)

    def _error(self, node: yaml.Node, loc: Loc, reason: str) -> SpecError:
        return SpecError(self.doc.path, *_pos(node.start_mark), loc_str(loc) or "(file)", reason)

    def build(self, node: yaml.Node, loc: Loc = ()) -> Any:
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.constructor.construct_object(node)
            except Exception as e:  # unknown tag, impossible date, too many digits, ...
                reason = _scrub(getattr(e, "problem", None) or str(e))[:200]
                if "digits" in reason and isinstance(e, ValueError):
                    reason = "an integer with more than 4300 digits"
                raise self._error(node, loc, f"cannot read this value: {reason}") from None
        if node.tag not in (_MAP, _SEQ):
            raise self._error(node, loc, "unsupported YAML tag: a spec holds plain mappings, lists and values")
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, child in enumerate(node.value):
                self.doc.marks[loc + (i,)] = (None, child.start_mark)
                items.append(self.build(child, loc + (i,)))
            return items
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            key = self._key(knode, loc)
            if key in out:
                first = _pos(self.doc.marks[loc + (key,)][0])[0]
                raise self._error(knode, loc + (key,), f"duplicate key (first at line {first})")
            self.doc.marks[loc + (key,)] = (knode.start_mark, vnode.start_mark)
            out[key] = self.build(vnode, loc + (key,))
        return out

    def _key(self, knode: yaml.Node, loc: Loc) -> str:
        if not isinstance(knode, yaml.ScalarNode):
            raise self._error(knode, loc, "a key must be a plain string, not a list or mapping")
        if knode.tag == "tag:yaml.org,2002:merge":
            raise self._error(knode, loc, "merge keys (<<) are not allowed in a spec")
        key = self.build(knode, loc)
        if not isinstance(key, str):
            raise self._error(knode, loc, f"this key is read as {describe(key)}, not a string; quote it")
        return key


@dataclass(frozen=True)
class _Entry:
    block: Block
    iface: str
    text: str
    file: str
    line: int
    col: int
    key: str  # key path shown in errors: floating_ips.addresses[3] or ips_file

    def where(self, other_file: str) -> str:
        if self.key == "ips_file":
            return f"{self.file} line {self.line}" if other_file != self.file else f"ips_file line {self.line}"
        file = f"{self.file} " if other_file != self.file else ""
        return f"{self.key}, {file}line {self.line}"

    def error(self, reason: str) -> SpecError:
        return SpecError(self.file, self.line, self.col, self.key, reason)


def _addresses(spec: Spec, doc: Doc, strict: bool = False) -> tuple[dict[str, tuple[Address, ...]], bytes]:
    """Resolve every floating address entry to (interface, block); check caps and overlaps."""
    entries = _spec_entries(spec, doc)
    ips_bytes = b""
    if spec.floating_ips.ips_file:
        ips_bytes, more = _ips_file_entries(spec, doc, strict)
        entries.extend(more)
    blocks = [e.block for e in entries]
    over = first_over_total(blocks)
    if over is not None:
        raise entries[over].error(f"more than {MAX_TOTAL:,} floating addresses in all")
    pair = find_overlap(blocks)
    if pair is not None:
        a, b = entries[pair[0]], entries[pair[1]]
        same = a.block.count == b.block.count == 1
        verb = "repeats the address of" if same else "overlaps"
        raise b.error(f"{verb} {a.where(b.file)}")
    _not_a_node_address(spec, entries)
    addresses = group_expand((e.iface, e.block) for e in entries)
    if spec.floating_ips.interface is not None:  # managed even when empty: emptying the list removes ours
        addresses.setdefault(spec.floating_ips.interface, ())
    return addresses, ips_bytes


def _not_a_node_address(spec: Spec, entries: list[_Entry]) -> None:
    """A floating address (or range) must not take a node's own address: the node would lose
    it, and the peer channel with it, whenever it is not the primary."""
    for name, node in spec.nodes.items():
        ip = ipaddress.ip_address(node.address)
        for e in entries:
            if e.block.version == ip.version and e.block.start <= int(ip) <= e.block.end:
                what = "is" if e.block.count == 1 else "includes"
                raise e.error(f"{what} the address of node {name} (nodes.{name}.address)")


def _spec_entries(spec: Spec, doc: Doc) -> list[_Entry]:
    fi = spec.floating_ips
    out: list[_Entry] = []
    for i, item in enumerate(fi.addresses):
        loc: Loc = ("floating_ips", "addresses", i)
        if isinstance(item, str):
            text, iface, line_col = item, fi.interface, doc.pos(loc)
        else:
            text, iface, line_col = item.address, item.interface or fi.interface, doc.pos(loc + ("address",))
        key = loc_str(loc)
        try:
            block = parse_entry(text)
        except AddressError as e:
            raise SpecError(doc.path, *line_col, key, str(e)) from None
        if iface is None:
            reason = "no interface: set floating_ips.interface or this entry's interface"
            raise SpecError(doc.path, *line_col, key, reason)
        out.append(_Entry(block, iface, text.strip(), doc.path, *line_col, key))
    return out


def _ips_file_entries(spec: Spec, doc: Doc, strict: bool = False) -> tuple[bytes, list[_Entry]]:
    fi = spec.floating_ips
    assert fi.ips_file is not None
    at = doc.pos(("floating_ips", "ips_file"))
    if fi.interface is None:
        raise SpecError(doc.path, *at, "floating_ips.ips_file", "the ips_file addresses need floating_ips.interface")
    if strict:
        try:
            trust.check_file(fi.ips_file, "ips_file")
        except trust.UntrustedError as e:
            raise SpecError(doc.path, *at, "floating_ips.ips_file", str(e)) from None
    data = read_capped(fi.ips_file, MAX_IPS_BYTES, doc.path, "floating_ips.ips_file", at)
    text = _decode(data, fi.ips_file, "ips_file")
    out: list[_Entry] = []
    for line, entry in ips_file_entries(text):
        try:
            block = parse_entry(entry)
        except AddressError as e:
            # Never the line's text (the parser's reasons never quote it): the path may name a
            # file of secrets, and this error is logged and kept in the state file.
            raise SpecError(fi.ips_file, line, 1, "ips_file", IPS_LINE_REFUSED.format(why=e)) from None
        out.append(_Entry(block, fi.interface, entry, fi.ips_file, line, 1, "ips_file"))
    return data, out
