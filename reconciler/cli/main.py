"""Command-line entry point: argument parsing and dispatch only.

Exit codes follow Terraform's -detailed-exitcode: 0 nothing to do, 2 changes pending
(blocked ones included), 1 error (`reconciler.cli.common`).  Every error reaches the user
as one line on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from reconciler.cli.common import EXIT_ERROR, UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reconciler", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    v = sub.add_parser("validate", help="check desired-state files; exit 0 when all are valid")
    v.add_argument("files", nargs="+", metavar="FILE")

    sub.add_parser("schema", help="print the JSON Schema of the desired-state file")

    ec = sub.add_parser("etcd-config", help="print etcd member MEMBER's configuration (/etc/default/etcd) from FILE")
    ec.add_argument("file")
    ec.add_argument("member", help="a node's name or the witness's (failover.witness.name)")

    pl = sub.add_parser("plan", help="show what would be done (dry run)")
    pl.add_argument("file", nargs="?", help="the spec file (or --git DIR --path FILE)")
    pl.add_argument("--node", default=None, help="this node's name (default: the host name)")
    pl.add_argument("--observed", metavar="SNAPSHOT.json", help="plan from a saved snapshot of this node")
    pl.add_argument("--peer-observed", metavar="SNAPSHOT.json", help="saved snapshot of the peer")
    pl.add_argument("--json", action="store_true", help="machine-readable, versioned output")
    pl.add_argument("--verbose", "-v", action="store_true", help="list every address")
    _git_args(pl, rev=True, state=True)
    pl.add_argument("-out", "--out", metavar="FILE", help="save the plan; `reconciler apply FILE` runs exactly it")

    ap = sub.add_parser("apply", help="one pass: plan, then act until converged, blocked or failed")
    ap.add_argument("file", help="the spec file, or a plan saved by `plan -out` (refused when stale)")
    ap.add_argument("--node", default=None)
    ap.add_argument("--yes", "-y", action="store_true", help="do not ask on a terminal")
    ap.add_argument("--log-format", choices=("text", "json"), default="text")

    rn = sub.add_parser("run", help="the agent: keep reconciling as the file changes and reality drifts")
    rn.add_argument("file", nargs="?", help="the spec file (or --git DIR --path FILE)")
    rn.add_argument("--node", default=None)
    rn.add_argument("--log-format", choices=("text", "json"), default="text")
    _git_args(rn, state=True)

    st = sub.add_parser("status", help="this node's observed state (and its peer's reachability)")
    st.add_argument("file", nargs="?", default="/etc/reconciler/cluster.yaml")
    st.add_argument("--node", default=None)
    st.add_argument("--json", action="store_true", help="the observation snapshot")
    _git_args(st, state=True)

    fp = sub.add_parser("fence-peer", help="DRBD's fence-peer handler in automatic failover (drbd.conf: "
                        "handlers { fence-peer \"reconciler fence-peer FILE\"; })")
    fp.add_argument("file", nargs="?", default="/etc/reconciler/cluster.yaml")
    fp.add_argument("--node", default=None)
    _git_args(fp, state=True)

    # The operator's verbs, import and completion (reconciler.cli.ops_cmds, .completion).
    for name, text in (("promote", "make NODE the primary: edit `primary:` in FILE in place"),
                       ("demote", "no primary: set `primary: none` in FILE (everything Secondary)"),
                       ("maintenance", "on: `primary: none`, remembering the primary; off: restore it")):
        op = sub.add_parser(name, help=text)
        if name == "promote":
            op.add_argument("node")
        if name == "maintenance":
            op.add_argument("state", choices=("on", "off"))
            op.add_argument("--primary", metavar="NODE", help="with off: the node to promote instead")
        op.add_argument("file")
        op.add_argument("--commit", action="store_true", help="git commit FILE with a message naming the change")
        op.add_argument("--dry-run", action="store_true", help="show the diff, write nothing")
    im = sub.add_parser("import", help="write a starting spec from /etc/hvmail_primary_ips and drbd.conf")
    im.add_argument("--primary-ips", required=True, metavar="FILE", help="e.g. /etc/hvmail_primary_ips")
    im.add_argument("--drbd-conf", metavar="FILE", help="e.g. /etc/drbd.conf (includes are followed)")
    im.add_argument("--node-names", metavar="NAME[=IP],...", help="rename drbd.conf's hosts, in order")
    im.add_argument("--interface", default="eth0", help="interface of the floating addresses (default eth0)")
    im.add_argument("--cluster", default="mail", help="cluster name (default mail)")
    im.add_argument("--primary", metavar="NODE", help="the node that is Primary now (default: none)")
    im.add_argument("--mount", action="append", metavar="RES=PATH", help="mount point of a DRBD resource")
    im.add_argument("-o", "--output", metavar="FILE", help="write here (never overwritten) instead of stdout")
    cp = sub.add_parser("completion", help="print a shell completion script")
    cp.add_argument("shell", choices=("bash", "zsh"))
    return p


def _git_args(p: argparse.ArgumentParser, rev: bool = False, state: bool = False) -> None:
    """The spec as committed in a git work tree (reconciler.cli.sources), and the state dir."""
    p.add_argument("--git", metavar="DIR", help="read the spec as committed at HEAD of this git work tree")
    p.add_argument("--path", metavar="FILE", help="with --git: the spec's path inside the work tree")
    if rev:
        p.add_argument("--rev", metavar="REV", help="with --git: the spec at this commit, branch or tag instead of HEAD")
    if state:
        p.add_argument("--state-dir", metavar="DIR", help="where the agent records its revisions "
                       "(default /var/lib/reconciler with --git; none for a plain file)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except UserError as e:
        print(f"reconciler: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("reconciler: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # never a traceback to the user; RECONCILER_DEBUG=1 shows it
        if os.environ.get("RECONCILER_DEBUG") == "1":
            raise
        print(f"reconciler: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "validate":
        from reconciler.cli.spec_cmds import cmd_validate

        return cmd_validate(args)
    if args.cmd == "schema":
        from reconciler.cli.spec_cmds import cmd_schema

        return cmd_schema(args)
    if args.cmd == "etcd-config":
        from reconciler.cli.spec_cmds import cmd_etcd_config

        return cmd_etcd_config(args)
    if args.cmd == "plan":
        from reconciler.cli.plan_cmd import cmd_plan

        return cmd_plan(args)
    if args.cmd in ("apply", "run"):
        from reconciler.cli import agent_cmds

        return {"apply": agent_cmds.cmd_apply, "run": agent_cmds.cmd_run}[args.cmd](args)
    if args.cmd == "fence-peer":
        from reconciler.cli.agent_cmds import cmd_fence_peer

        return cmd_fence_peer(args)
    if args.cmd == "status":
        from reconciler.cli.status_cmd import cmd_status

        return cmd_status(args)
    if args.cmd in ("promote", "demote", "maintenance", "import"):
        from reconciler.cli import ops_cmds

        return {"promote": ops_cmds.cmd_promote, "demote": ops_cmds.cmd_demote,
                "maintenance": ops_cmds.cmd_maintenance, "import": ops_cmds.cmd_import}[args.cmd](args)
    if args.cmd == "completion":
        from reconciler.cli.completion import cmd_completion

        return cmd_completion(args, _parser())
    raise UserError(f"unknown command {args.cmd}")
