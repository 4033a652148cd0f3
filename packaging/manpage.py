"""Writes reconciler(1) in roff from the command's own --help texts (used by scripts/package).

    python3 packaging/manpage.py VERSION -- COMMAND... > reconciler.1

COMMAND is how to run reconciler (e.g. `venv/bin/python -m reconciler`).  The subcommands are
read from the top-level usage line, so a command added later gets its section with no change
here.  Standard library only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

SUMMARY = "declarative two-node HA agent: DRBD, PostgreSQL streaming replication and floating IPs from one YAML file"

DESCRIPTION = """\
reconciler reads one YAML file that says which node of a two-node cluster is Primary,
observes the real DRBD, PostgreSQL and interface state of this node and of its peer, and
applies the smallest safe set of actions. `reconciler run` is the agent (the systemd unit
reconciler.service runs it); the other commands check, plan, apply once, show status and
edit the file. Exit codes: 0 nothing to do (or success), 2 changes pending, 1 error."""

FILES = [
    ("/etc/reconciler", "configuration: the peer secret, the replication password file, the spec or its git checkout (mode 0700)"),
    ("/var/lib/reconciler", "the agent's record of the revisions it attempted and applied"),
    ("/lib/systemd/system/reconciler.service", "the agent's unit; installed disabled"),
    ("/usr/share/doc/reconciler/examples/cluster.example.yaml", "an example desired-state file"),
    ("/usr/share/doc/reconciler/README.Debian", "first steps after installing the package"),
]


def esc(text: str) -> str:
    """Text safe in a roff line: backslashes, leading dots and quotes, hyphens as minus."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.MULTILINE)


def help_text(cmd: list[str], *args: str) -> str:
    env = dict(os.environ, COLUMNS="78", PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([*cmd, *args, "--help"], capture_output=True, text=True, env=env, check=True, timeout=60)
    return r.stdout.rstrip()


def subcommands(top: str) -> list[str]:
    m = re.search(r"\{([a-z,_-]+)\}", top)
    if not m:
        raise SystemExit("manpage: no {sub,commands} in `reconciler --help`")
    return m.group(1).split(",")


def preformatted(text: str) -> list[str]:
    return [".nf", ".RS 4", *(esc(line) if line else "" for line in text.splitlines()), ".RE", ".fi"]


def render(version: str, cmd: list[str]) -> str:
    top = help_text(cmd)
    date = time.strftime("%Y-%m-%d", time.gmtime(int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))))
    out = [
        f'.TH RECONCILER 1 "{date}" "reconciler {esc(version)}" "User Commands"',
        ".SH NAME",
        f"reconciler \\- {esc(SUMMARY)}",
        ".SH SYNOPSIS",
        ".B reconciler",
        ".I command",
        "[\\fIoptions\\fR]",
        ".SH DESCRIPTION",
        *esc(DESCRIPTION).splitlines(),
        ".SH COMMANDS",
        *preformatted(top.split("\n\n", 2)[-1] if "positional arguments" in top else top),
    ]
    for name in subcommands(top):
        out += [".SS " + esc(f"reconciler {name}"), *preformatted(help_text(cmd, name))]
    out += [".SH FILES"]
    for path, what in FILES:
        out += [".TP", f".I {esc(path)}", esc(what)]
    out += [
        ".SH SEE ALSO",
        "/usr/share/doc/reconciler/README.md, /usr/share/doc/reconciler/operating.md,",
        "\\fBsystemctl\\fR(1), \\fBdrbdadm\\fR(8), \\fBpg_ctl\\fR(1)",
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 1
    sys.stdout.write(render(argv[0], argv[2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
