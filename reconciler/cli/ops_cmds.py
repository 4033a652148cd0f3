"""The operator's verbs (`promote`, `demote`, `maintenance on|off`) and `import`.

The verbs change only the `primary:` value of the spec file, in place (see
`reconciler.spec.edit`): the result is validated before anything is written, the write is
atomic, the diff is shown, and `--commit` commits just that file with git (argv, timeouts).
`import` writes a starting spec from /etc/hvmail_primary_ips and drbd.conf.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from reconciler._cmd import CmdResult, run
from reconciler.cli.common import UserError
from reconciler.spec.edit import (
    EditError,
    PrimarySite,
    check_only_primary,
    create_new,
    locate,
    set_primary,
    unified_diff,
    write_atomic,
)
from reconciler.spec.load import MAX_IPS_BYTES, MAX_SPEC_BYTES, SpecError, load_spec, read_capped
from reconciler.spec.models import Spec

GIT_TIMEOUT = 120.0  # a commit runs the repository's hooks (reconciler validate, say)


@dataclass(frozen=True)
class _Opened:
    path: str
    data: bytes
    text: str
    spec: Spec
    site: PrimarySite


def _open(path: str) -> _Opened:
    """Read and validate the spec file; the verbs refuse to edit a file that is not valid."""
    try:
        data = read_capped(path, MAX_SPEC_BYTES, path, "(file)")
        spec = load_spec(path, data).model
    except SpecError as e:
        raise UserError(f"{e} (nothing changed)") from None
    text = data.decode("utf-8")  # load_spec has checked it decodes
    try:
        site = locate(text)
    except EditError as e:
        raise UserError(f"{path}: {e}") from None
    return _Opened(path, data, text, spec, site)


def _check_promotable(op: _Opened, node: str) -> None:
    spec = op.spec
    if node == "none":
        raise UserError("to leave no node Primary, use `reconciler demote` or `reconciler maintenance on`")
    if node not in spec.nodes:
        raise UserError(f"{op.path}: {node!r} is not a node of cluster {spec.cluster} (nodes: {', '.join(spec.nodes)})")
    if node in spec.fenced:
        raise UserError(
            f"{op.path}: refusing to promote {node}: it is listed in fenced: (declared powered off or cut off, "
            f"so its data may be stale or diverged); once it has rejoined as a standby, remove it from fenced: "
            f"and promote it then"
        )


def cmd_promote(args: argparse.Namespace) -> int:
    op = _open(args.file)
    _check_promotable(op, args.node)
    if op.spec.primary == args.node and op.site.memo is None:
        print(f"{op.path}: {args.node} is already the primary; nothing to change")
        return 0
    new = _edit(op, args.node, None)
    return _apply(args, op, args.node, new, f"promote {args.node} (was {op.spec.primary})")


def cmd_demote(args: argparse.Namespace) -> int:
    op = _open(args.file)
    if op.spec.primary == "none":
        print(f"{op.path}: primary is already none; nothing to change")
        return 0
    new = _edit(op, "none", None)
    return _apply(args, op, "none", new, f"demote {op.spec.primary} (primary: none)")


def cmd_maintenance(args: argparse.Namespace) -> int:
    op = _open(args.file)
    old = op.spec.primary
    if args.state == "on":
        if args.primary:
            raise UserError("--primary goes with `maintenance off`")
        if old == "none":
            was = f", previous primary {op.site.memo}" if op.site.memo else ""
            print(f"{op.path}: already primary: none{was}; nothing to change")
            return 0
        return _apply(args, op, "none", _edit(op, "none", old), f"maintenance on (was {old})")
    if old != "none":
        raise UserError(f"{op.path}: not in maintenance (primary is {old}); to switch over, use `reconciler promote`")
    node = args.primary or op.site.memo
    if node is None:
        raise UserError(f"{op.path}: no previous primary is recorded (not set by `maintenance on`); give --primary NODE")
    _check_promotable(op, node)
    return _apply(args, op, node, _edit(op, node, None), f"maintenance off (promote {node})")


def _edit(op: _Opened, node: str, remember: str | None) -> str:
    try:
        new = set_primary(op.text, node, remember)
        check_only_primary(op.text, new, node)
    except EditError as e:
        raise UserError(f"{op.path}: {e}") from None
    return new


def _apply(args: argparse.Namespace, op: _Opened, node: str, new: str, change: str) -> int:
    """Validate, show the diff, write atomically, commit: each only when the previous worked."""
    data = new.encode("utf-8")
    try:
        load_spec(op.path, data)
    except SpecError as e:
        raise UserError(f"refusing to write {op.path}: the result would not be valid: {e}") from None
    repo = _git_preflight(op.path) if args.commit else None
    sys.stdout.write(unified_diff(op.text, new, op.path))
    if args.dry_run:
        print(f"{op.path}: {change} (dry run: not written)")
        return 0
    try:
        if read_capped(op.path, MAX_SPEC_BYTES, op.path, "(file)") != op.data:
            raise UserError(f"{op.path} changed while being edited; nothing written, run again")
        write_atomic(op.path, data)
    except (OSError, SpecError) as e:
        raise UserError(f"cannot write {op.path}: {getattr(e, 'strerror', None) or e}") from None
    print(f"{op.path}: {change}")
    if repo is not None:
        _git_commit(repo, op.path, f"reconciler: {change}")
    return 0


def _git(folder: str, *argv: str) -> CmdResult:
    return run(["git", "-C", folder, *argv], GIT_TIMEOUT)


def _git_preflight(path: str) -> tuple[str, str]:
    """(folder, name) of a file git tracks with no uncommitted change, before it is edited."""
    folder, name = os.path.split(os.path.realpath(path))
    r = _git(folder, "rev-parse", "--show-toplevel")
    if r.missing:
        raise UserError("--commit: git is not installed")
    if not r.ok:
        raise UserError(f"--commit: {path} is not in a git repository ({r.describe()})")
    if not _git(folder, "ls-files", "--error-unmatch", "--", name).ok:
        raise UserError(f"--commit: git does not track {path}; add and commit it first (nothing changed)")
    r = _git(folder, "status", "--porcelain", "--", name)
    if not r.ok or r.stdout.strip():
        raise UserError(f"--commit: {path} has uncommitted changes; commit or revert them first (nothing changed)")
    return folder, name


def _git_commit(repo: tuple[str, str], path: str, message: str) -> None:
    folder, name = repo
    r = _git(folder, "commit", "-q", "-m", message, "--", name)
    if not r.ok:
        raise UserError(f"{path} was written but not committed: {r.describe()}")
    head = _git(folder, "rev-parse", "--short", "HEAD")
    print(f"committed {head.stdout.strip() or '?'}: {message}")


def cmd_import(args: argparse.Namespace) -> int:
    from reconciler.spec import drbdconf, legacy

    try:
        sections, warnings = legacy.parse_ips(_read_text(args.primary_ips), args.primary_ips)
        resources = drbdconf.resources(drbdconf.load(args.drbd_conf)) if args.drbd_conf else []
        if args.drbd_conf and not resources:
            raise legacy.LegacyError("no `resource NAME {` section (includes followed)", args.drbd_conf)
        nodes = legacy.nodes_from(resources, [n for n in (args.node_names or "").split(",") if n.strip()])
        drbd = legacy.drbd_from(resources, _mounts(args.mount or []))
    except (legacy.LegacyError, drbdconf.DrbdConfError) as e:
        raise UserError(str(e)) from None
    primary = args.primary or "none"
    if primary != "none" and primary not in {n.name for n in nodes}:
        raise UserError(f"--primary {primary}: not one of the nodes ({', '.join(n.name for n in nodes)})")
    sources = [args.primary_ips] + ([args.drbd_conf] if args.drbd_conf else [])
    plan = legacy.ImportPlan(args.cluster, nodes, primary, args.interface, sections, drbd, sources)
    text = legacy.render_spec(plan)
    try:
        load_spec(args.output or "<import>", text.encode("utf-8"))
    except SpecError as e:
        raise UserError(f"the imported spec would not be valid: {e}") from None
    warnings += [f"resource {r.name}: no mount point (--mount {r.name}=PATH); left commented out" for r in drbd if not r.mount]
    if primary == "none":
        warnings.append("primary: none (give --primary NODE, the node that is Primary now)")
    if args.output:
        try:
            create_new(args.output, text.encode("utf-8"))
        except FileExistsError:
            raise UserError(f"{args.output} exists; not overwritten (choose another -o)") from None
        except OSError as e:
            raise UserError(f"cannot write {args.output}: {e.strerror or e}") from None
    for w in warnings:
        print(f"reconciler import: warning: {w}", file=sys.stderr)
    sys.stdout.write(f"wrote {args.output}; check it with: reconciler plan {args.output}\n" if args.output else text)
    return 0


def _read_text(path: str) -> str:
    try:
        data = read_capped(path, MAX_IPS_BYTES, path, "(file)")
    except SpecError as e:
        raise UserError(e.reason) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}:{line}: not valid UTF-8") from None


def _mounts(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, eq, path = item.partition("=")
        if not eq or not name or not path.startswith("/"):
            raise UserError(f"--mount {item}: expected RESOURCE=/absolute/path")
        out[name] = path
    return out
