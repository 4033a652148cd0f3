"""What every command shares: the exit codes, the one-line user error, this node's name.

Exit codes follow Terraform's -detailed-exitcode: 0 nothing to do, 2 changes pending
(blocked ones included), 1 error.  `reconciler.cli.main` prints a `UserError` as one line
on stderr and exits 1.  The commands import these from here, never from `main`.
"""

from __future__ import annotations

import socket

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


class UserError(Exception):
    """An error to print as one line and exit 1."""


def default_node() -> str:
    return socket.gethostname().split(".")[0]
