"""Start and stop spec services, blocking until the status says they really changed.

systemd: `systemctl start|stop UNIT` without --no-block, so systemd's job finishes (stop
returns once the unit's processes are gone) before the next step - e.g. unmounting -
runs.  commands: the spec's argv, then poll its status argv until it agrees, because a
stop script may only send a signal.  Either way one overall timeout per action.
"""

from __future__ import annotations

import time

from reconciler import _cmd
from reconciler.observe.service import ServiceObserveError, check_unit, read_service
from reconciler.spec.models import Service

TIMEOUT_S = 120.0
POLL_S = 0.2


class ServiceError(Exception):
    """A service did not reach the wanted state; the message says why."""


def _wait_for(service: Service, active: bool, deadline: float) -> None:
    while True:
        try:
            if read_service(service).active == active:
                return
        except ServiceObserveError as e:
            raise ServiceError(str(e)) from e
        if time.monotonic() >= deadline:
            want = "running" if active else "stopped"
            hint = f"; see `systemctl status {service.name}`" if service.commands is None else ""
            verb = "start" if active else "stop"
            raise ServiceError(f"{service.name}: its status does not say {want} after the {verb}{hint}")
        time.sleep(POLL_S)


def _change(service: Service, verb: str, timeout: float) -> None:
    check_unit(service.name)
    deadline = time.monotonic() + timeout
    try:
        if read_service(service).active == (verb == "start"):
            return  # already there: a second start script run could spawn a second daemon
    except ServiceObserveError as e:
        raise ServiceError(str(e)) from e
    if service.commands is not None:
        argv = service.commands.start if verb == "start" else service.commands.stop
    else:
        argv = ["systemctl", verb, "--", service.name]
    res = _cmd.run(argv, timeout=timeout)
    if not res.ok:
        raise ServiceError(f"cannot {verb} {service.name}: {res.describe()}")
    _wait_for(service, verb == "start", deadline)


def start(service: Service, timeout: float = TIMEOUT_S) -> None:
    """Inactive -> active; returns once the status reports it running."""
    _change(service, "start", timeout)


def stop(service: Service, timeout: float = TIMEOUT_S) -> None:
    """Active -> inactive; returns once the status reports it stopped."""
    _change(service, "stop", timeout)
