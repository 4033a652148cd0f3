"""Importers from the legacy GreenArrow HA files into a starting desired-state file.

`parse_ips` reads /etc/hvmail_primary_ips (one CIDR or range a line, `#` comments) into
sections headed by their comment lines; `collapse` joins contiguous addresses sharing a
prefix into inclusive ranges; `nodes_from` / `drbd_from` turn drbd.conf resources into
spec nodes and DRBD entries; `render_spec` writes the YAML text.  All pure (no I/O).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace

from reconciler.spec.addresses import MAX_RANGE, AddressError, Block, find_overlap, parse_entry
from reconciler.spec.drbdconf import Resource
from reconciler.spec.edit import render_scalar
from reconciler.spec.models import NAME_RE

_COL = 26  # column of trailing comments, as in specs/cluster.example.yaml


class LegacyError(ValueError):
    """A problem in a legacy input (or the import options); `str()` is one line."""

    def __init__(self, reason: str, file: str | None = None, line: int = 0) -> None:
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(where + " ".join(reason.split()))


@dataclass(frozen=True)
class IpsItem:
    block: Block
    text: str  # the entry as written
    line: int
    comment: str | None = None  # the comment at the end of its line


@dataclass
class IpsSection:
    """Entries in file order, after the comment lines that head them."""

    comments: list[str] = field(default_factory=list)
    items: list[IpsItem] = field(default_factory=list)


def parse_ips(text: str, file: str) -> tuple[list[IpsSection], list[str]]:
    """(sections, warnings).  Exact repeats are dropped with a warning; any other overlap,
    or a line that is not a CIDR or range, is a LegacyError naming its line."""
    sections = [IpsSection()]
    seen: dict[Block, int] = {}
    warnings: list[str] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        body, hashmark, comment = raw.partition("#")
        entry = body.strip()
        if not entry:
            if hashmark:
                if sections[-1].items:
                    sections.append(IpsSection())
                sections[-1].comments.append(_clean(comment).rstrip())  # the text after '#', as written
            continue
        try:
            block = parse_entry(entry)
        except AddressError as e:
            raise LegacyError(str(e), file, n) from None
        if block in seen:
            warnings.append(f"{file}:{n}: {entry} repeats line {seen[block]}; dropped")
            continue
        seen[block] = n
        sections[-1].items.append(IpsItem(block, entry, n, _clean(comment).strip() if hashmark else None))
    items = [i for s in sections for i in s.items]
    pair = find_overlap([i.block for i in items])
    if pair is not None:
        a, b = items[pair[0]], items[pair[1]]
        raise LegacyError(f"{b.text} overlaps {a.text} (line {a.line})", file, b.line)
    return [s for s in sections if s.items or s.comments], warnings


def _clean(comment: str) -> str:
    """A comment's text, safe inside a YAML comment (printable, one line)."""
    return "".join(c if c.isprintable() else "?" for c in comment)


def collapse(items: list[IpsItem]) -> list[IpsItem]:
    """Sorted, with runs of contiguous addresses sharing a prefix and a network joined into
    one range (at most MAX_RANGE addresses); entries with their own comment stay apart."""
    out: list[IpsItem] = []
    for it in sorted(items, key=lambda i: (i.block.version, i.block.start)):
        if out and _joinable(out[-1], it):
            prev = out[-1]
            out[-1] = replace(prev, block=replace(prev.block, end=it.block.end))
        else:
            out.append(it)
    return out


def _joinable(a: IpsItem, b: IpsItem) -> bool:
    x, y = a.block, b.block
    host_bits = (32 if x.version == 4 else 128) - x.prefix
    return (
        a.comment is None and b.comment is None and x.version == y.version and x.prefix == y.prefix
        and x.end + 1 == y.start and x.start >> host_bits == y.end >> host_bits
        and y.end - x.start + 1 <= MAX_RANGE
    )


def format_block(b: Block) -> str:
    """`addr/prefix` or `first-last/prefix`, the form `parse_entry` reads back."""
    ip = ipaddress.IPv4Address if b.version == 4 else ipaddress.IPv6Address
    first = ip(b.start).compressed
    return f"{first}/{b.prefix}" if b.count == 1 else f"{first}-{ip(b.end).compressed}/{b.prefix}"


@dataclass(frozen=True)
class NodeOut:
    name: str
    address: str
    note: str | None = None


@dataclass(frozen=True)
class DrbdOut:
    name: str
    device: str
    mount: str | None


def nodes_from(resources: list[Resource], names: list[str]) -> list[NodeOut]:
    """The nodes: drbd.conf's `on` hosts (domain dropped) in order of appearance, renamed in
    that order by `names` items `NAME` or `NAME=ADDRESS` (the address overrides drbd.conf's)."""
    hosts: dict[str, str] = {}
    for res in resources:
        for h in res.hosts:
            if hosts.setdefault(h.name, h.address) != h.address:
                raise LegacyError(f"host {h.name} has two addresses ({hosts[h.name]}, {h.address}) in drbd.conf")
    pairs = [_name_item(item) for item in names]
    if hosts and pairs and len(pairs) != len(hosts):
        raise LegacyError(f"--node-names gives {len(pairs)} names for the {len(hosts)} hosts of drbd.conf")
    if not hosts:
        if not pairs or any(addr is None for _, addr in pairs):
            raise LegacyError("without a drbd.conf, give the nodes as --node-names mx1=10.0.0.1,mx2=10.0.0.2")
        return _checked([NodeOut(n, a or "") for n, a in pairs])
    out = []
    for i, (host, addr) in enumerate(hosts.items()):
        name, override = pairs[i] if pairs else (host.split(".")[0], None)
        out.append(NodeOut(name, override or addr, f'"on {host}" in drbd.conf'))
    for res in resources:
        if {h.name for h in res.hosts} != set(hosts):
            raise LegacyError(f"resource {res.name} is not on the same hosts as the others ({', '.join(hosts)})")
    return _checked(out)


def _name_item(item: str) -> tuple[str, str | None]:
    name, eq, addr = item.strip().partition("=")
    if eq:
        try:
            addr = str(ipaddress.ip_address(addr.strip()))
        except ValueError:
            raise LegacyError(f"--node-names: {addr.strip()!r} is not an IP address") from None
    return name.strip(), (addr if eq else None)


def _checked(nodes: list[NodeOut]) -> list[NodeOut]:
    if not 1 <= len(nodes) <= 2:
        raise LegacyError(f"a cluster has one or two nodes, found {len(nodes)}: {', '.join(n.name for n in nodes)}")
    for n in nodes:
        if not re.match(NAME_RE, n.name):
            raise LegacyError(f"{n.name!r} is not a valid node name (letters, digits, '_', '.', '-')")
    if len({n.name for n in nodes}) != len(nodes):
        raise LegacyError(f"two nodes are named alike: {', '.join(n.name for n in nodes)} (use --node-names)")
    return nodes


def drbd_from(resources: list[Resource], mounts: dict[str, str]) -> list[DrbdOut]:
    """One DRBD entry per resource, mounted where `mounts` (resource -> path) says."""
    unknown = sorted(set(mounts) - {r.name for r in resources})
    if unknown:
        raise LegacyError(f"--mount names {', '.join(unknown)}, not a resource of drbd.conf")
    return [DrbdOut(r.name, r.device, mounts.get(r.name)) for r in resources]


@dataclass
class ImportPlan:
    """Everything `render_spec` writes."""

    cluster: str
    nodes: list[NodeOut]
    primary: str  # a node name or "none"
    interface: str
    sections: list[IpsSection]
    drbd: list[DrbdOut]
    sources: list[str]
    schema: str = "cluster.schema.json"


def _line(text: str, comment: str | None = None, col: int = _COL) -> str:
    return f"{text.ljust(col - 1)} # {comment}" if comment else text


def render_spec(plan: ImportPlan) -> str:
    """The YAML text of the starting spec (validate it with `load_spec`)."""
    s = render_scalar
    out = [
        f"# yaml-language-server: $schema={plan.schema}",
        "#",
        f"# Imported by `reconciler import` from {', '.join(plan.sources)}.",
        "# Review every line marked `check:`, then: reconciler validate FILE; reconciler plan FILE",
        "# (editors find the schema after: reconciler schema > cluster.schema.json)",
        "",
        f"cluster: {s(plan.cluster, None)}",
        "",
        "nodes:",
    ]
    for n in plan.nodes:
        out += [f"  {s(n.name, None)}:", _line(f"    address: {s(n.address, None)}", n.note)]
    why = None if plan.primary != "none" else "check: with none the agents take everything down (maintenance)"
    out += ["", _line(f"primary: {s(plan.primary, None)}", why), "", "fenced: []", ""]
    out += _render_ips(plan)
    out += _render_drbd(plan.drbd)
    out += [
        "",
        "# Not in the legacy files; see specs/cluster.example.yaml:",
        "# postgres:",
        "#   data_dir: /var/lib/postgresql/15/main",
        "# services:",
        "#   - name: greenarrow",
    ]
    return "\n".join(out) + "\n"


def _render_ips(plan: ImportPlan) -> list[str]:
    out = ["floating_ips:", _line(f"  interface: {render_scalar(plan.interface, None)}", "check: the interface")]
    rows: list[tuple[str, str | None]] = []
    for sec in plan.sections:
        rows += [(f"    #{c}", None) for c in sec.comments]
        for it in collapse(sec.items):
            note = it.comment if it.comment is not None else (f"{it.block.count} addresses" if it.block.count > 1 else None)
            rows.append((f"    - {format_block(it.block)}", note))
    col = max([_COL] + [len(text) + 2 for text, note in rows if note])  # one comment column for the list
    entries = [_line(text, note, col) for text, note in rows]
    if not any(sec.items for sec in plan.sections):
        return out + ["  addresses: []", *entries, ""]
    return out + ["  addresses:", *entries, ""]


def _render_drbd(drbd: list[DrbdOut]) -> list[str]:
    if not drbd:
        return ["drbd: []"]
    out = ["drbd:"]
    for r in drbd:
        out += [f"  - name: {render_scalar(r.name, None)}", f"    device: {render_scalar(r.device, None)}"]
        if r.mount:
            out.append(_line(f"    mount: {render_scalar(r.mount, None)}", "mounted on the Primary only"))
        else:
            out.append(_line("    # mount: /var/hvmail", f"check: not in drbd.conf (--mount {r.name}=PATH)"))
        out.append(_line("    fstype: ext4", f"check: not in drbd.conf (blkid {r.device})"))
    return out
