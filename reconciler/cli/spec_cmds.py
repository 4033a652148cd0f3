"""`reconciler validate FILE` and `reconciler schema`.

validate prints a one-line summary on success (exit 0) and exactly one
`FILE:LINE:COL: key.path: reason` line on stderr on failure (exit 1), never a
traceback, whatever goes wrong while loading.
"""

from __future__ import annotations

import argparse
import sys

from reconciler.spec import LoadedSpec


def summary(loaded: LoadedSpec) -> str:
    """`FILE: valid (2 nodes, 44 floating addresses on 2 interfaces, ...)`."""
    spec = loaded.model
    n_addr = sum(len(a) for a in loaded.addresses.values())
    parts = [
        f"{len(spec.nodes)} node{'s' if len(spec.nodes) != 1 else ''}",
        f"{n_addr} floating address{'es' if n_addr != 1 else ''} on {len(loaded.addresses)} interface"
        + ("s" if len(loaded.addresses) != 1 else ""),
        f"{len(spec.drbd)} DRBD resource{'s' if len(spec.drbd) != 1 else ''}",
        "postgres" if spec.postgres is not None else "no postgres",
        f"{len(spec.services)} service{'s' if len(spec.services) != 1 else ''}",
        f"primary {spec.primary}",
    ]
    if spec.fenced:
        parts.append(f"fenced {', '.join(spec.fenced)}")
    if spec.failover.mode == "automatic" and spec.failover.witness is not None:
        parts.append(f"automatic failover (witness {spec.failover.witness.name}, lease {spec.failover.lease_ttl_s} s)")
    return f"{loaded.path}: valid ({', '.join(parts)})"


def cmd_validate(args: argparse.Namespace) -> int:
    """Each file: one line on stdout when valid, one line on stderr when not; exit 1 if any is not."""
    return max(_validate_one(path) for path in args.files)


def _validate_one(path: str) -> int:
    from reconciler.spec.load import SpecError, load_spec

    try:
        loaded = load_spec(path)
    except SpecError as e:
        print(str(e), file=sys.stderr)
        return 1
    except RecursionError:
        print(f"{path}:1:1: (file): nested too deeply", file=sys.stderr)
        return 1
    except Exception as e:  # a bug or an environment problem: still one line, no traceback
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        print(f"{path}:1:1: (file): internal error while loading: {reason}", file=sys.stderr)
        return 1
    print(summary(loaded))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from reconciler.spec.schema import schema_json

    sys.stdout.write(schema_json())
    return 0


def cmd_etcd_config(args: argparse.Namespace) -> int:
    """The member's /etc/default/etcd on stdout; a bad spec or member is one line on stderr, exit 1."""
    from reconciler.cli.common import UserError
    from reconciler.spec.etcdconf import EtcdConfigError, member_config
    from reconciler.spec.load import SpecError, load_spec

    try:
        loaded = load_spec(args.file)
    except SpecError as e:
        raise UserError(str(e)) from None
    try:
        sys.stdout.write(member_config(loaded.model, args.member, loaded.path))
    except EtcdConfigError as e:
        raise UserError(f"{loaded.path}: {e}") from None
    return 0
