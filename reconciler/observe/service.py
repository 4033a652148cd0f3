"""Whether each spec service runs: `systemctl is-active UNIT`, or the spec's status argv.

Two backends chosen per service: with `commands` the status argv's exit code decides
(0 = active, anything else = not active; `failed` cannot be told apart and stays False);
without it the name is a systemd unit and `is-active` prints its state word.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from reconciler import _cmd
from reconciler.model import ServiceObs
from reconciler.spec.models import UNIT_RE, Service

STATUS_TIMEOUT_S = 15.0
_UNIT = re.compile(UNIT_RE)


class ServiceObserveError(Exception):
    """The service manager or the status command could not answer."""


def check_unit(name: str) -> str:
    if not _UNIT.match(name) or name.startswith("-"):
        raise ValueError(f"invalid service/unit name {name!r}")
    return name


def parse_is_active(stdout: str) -> ServiceObs | None:
    """`systemctl is-active` output -> ServiceObs; None if it is not a unit state word."""
    word = stdout.strip().splitlines()[0] if stdout.strip() else ""
    if word in ("active", "reloading", "refreshing"):
        return ServiceObs(active=True)
    if word == "failed":
        return ServiceObs(active=False, failed=True)
    if word in ("inactive", "activating", "deactivating", "maintenance"):
        return ServiceObs(active=False)
    return None


def read_service(service: Service) -> ServiceObs:
    check_unit(service.name)
    if service.commands is not None:
        res = _cmd.run(service.commands.status, timeout=STATUS_TIMEOUT_S)
        if res.missing or res.timed_out:
            raise ServiceObserveError(f"status of {service.name}: {res.describe()}")
        return ServiceObs(active=res.rc == 0)
    res = _cmd.run(["systemctl", "is-active", "--", service.name], timeout=STATUS_TIMEOUT_S)
    obs = None if res.missing or res.timed_out else parse_is_active(res.stdout)
    if obs is None:
        raise ServiceObserveError(f"systemd state of {service.name}: {res.describe()}")
    return obs


def read_services(services: Sequence[Service]) -> dict[str, ServiceObs]:
    """Observe every service; raises ServiceObserveError on the first that cannot be read."""
    return {s.name: read_service(s) for s in services}
