"""Run one of the project's real DRBD driver calls and print the result as JSON.

`python -m lab.drive read|primary|secondary RESOURCE DEVICE`, run inside a lab VM
through `exec` with the layout's `guest_env`, so that tests assert on what the driver itself observed and
returned.  Exit 0 when JSON was printed (the outcome is in it), 2 on bad arguments.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from reconciler.execute import drbd as drbd_exec
from reconciler.observe.drbd import DrbdObserveError, read_drbd
from reconciler.spec.models import DrbdResource

# `lab` is not installed: the VMs see the checkout at the same path (the host's root over
# 9p), and `python -m lab.drive` finds it through PYTHONPATH (Layout.guest_env).


def drive(verb: str, res: DrbdResource) -> dict[str, Any]:
    if verb == "read":
        try:
            return {"obs": read_drbd([res])[res.name].model_dump()}
        except DrbdObserveError as e:
            return {"error": str(e)}
    action = {"primary": drbd_exec.primary, "secondary": drbd_exec.secondary}[verb]
    try:
        result = action(res)
    except drbd_exec.DrbdActionError as e:
        result = e.result
    out = asdict(result)
    out["outcome"] = result.outcome.value
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("read", "primary", "secondary"):
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    res = DrbdResource(name=argv[1], device=argv[2])
    print(json.dumps(drive(argv[0], res)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
