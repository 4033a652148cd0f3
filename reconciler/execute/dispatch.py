"""Run one planned action with the driver that owns it; the result is one line.

This is the only place that maps an action kind to a driver call (`_execute`: mypy
--strict reports a kind left out of it).  It never decides anything: guards were
evaluated by the planner, and the loop observes again afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, assert_never

from reconciler.address import Address
from reconciler.plan.actions import Action, Kind
from reconciler.plan.kinds import DrbdMount, ReplicationSource
from reconciler.spec import LoadedSpec
from reconciler.spec.models import DrbdResource, Postgres, Service

if TYPE_CHECKING:  # imported where used: they load socket and netlink code that not every command needs
    from reconciler.execute.announce import AnnounceJob, Announcer
    from reconciler.execute.net import NetResult


@dataclass(frozen=True)
class Result:
    ok: bool
    detail: str = ""


class ActionFailed(Exception):
    pass


def _service(spec: LoadedSpec, name: str) -> Service:
    for s in spec.model.services:
        if s.name == name:
            return s
    raise ActionFailed(f"service {name} is not in the spec")


def _resource(spec: LoadedSpec, name: str) -> DrbdResource:
    for r in spec.model.drbd:
        if r.name == name or r.mount == name:
            return r
    raise ActionFailed(f"DRBD resource {name} is not in the spec")


def _nothing_to_run(a: Action) -> str:
    raise ActionFailed(f"{a.target}: nothing to run; the state is read again on the next cycle")


def _agent_only(a: Action) -> str:
    """Leadership steps (etcd transactions under this node's lease, the watchdog it feeds) need
    the agent's lease keeper: the agent runs them (agent/coordination.py), never a one-shot
    command."""
    raise ActionFailed(f"{a.kind.value}: automatic failover steps are run by the agent (`reconciler run`), "
                       "which holds the lease")


def _pg(spec: LoadedSpec) -> Postgres:
    if spec.model.postgres is None:
        raise ActionFailed("postgres is not in the spec")
    return spec.model.postgres


def _src(a: Action) -> ReplicationSource:
    if not isinstance(a.payload, ReplicationSource) or not a.payload.host:
        raise ActionFailed(f"{a.kind.value}: no replication source")
    return a.payload


_announcer: Announcer | None = None
_jobs: list[AnnounceJob] = []


def _announce(spec: LoadedSpec, iface: str, items: tuple[Address, ...]) -> None:
    """Queue gratuitous ARP / unsolicited NA for addresses just added or adopted, paced
    in the background so the loop goes on to start the services."""
    global _announcer
    from reconciler.execute.announce import Announcer

    if spec.model.announce.count == 0:
        return
    if _announcer is None:
        _announcer = Announcer(spec.model.announce.rate_limit_pps)
    _jobs[:] = [j for j in _jobs if not j.done.is_set()]
    _jobs.append(_announcer.submit(iface, items, spec.model.announce))


def announce_held(spec: LoadedSpec, iface: str, items: tuple[Address, ...]) -> None:
    """Announce addresses this node already holds, as after adding them (the agent does
    this once on start: one killed right after adding them may not have announced them)."""
    _announce(spec, iface, items)


def wait_for_announcements(timeout: float = 60.0) -> None:
    """For one-shot commands: let queued announcements finish before the process exits."""
    deadline = time.monotonic() + timeout
    for j in list(_jobs):
        j.done.wait(max(0.0, deadline - time.monotonic()))


def _net(fn: Callable[..., NetResult], a: Action, spec: LoadedSpec | None = None) -> str:
    r = fn(a.target, a.items) if a.items else fn(a.target)
    if not r.ok:
        raise ActionFailed(r.summary())
    if spec is not None:
        _announce(spec, a.target, a.items)
    return r.summary()


def _drbd(fn: Callable[[DrbdResource], object], spec: LoadedSpec, a: Action) -> str:
    from reconciler.execute.drbd import DrbdActionError

    try:
        r = fn(_resource(spec, a.target))
    except DrbdActionError as e:
        raise ActionFailed(str(e).splitlines()[0]) from None
    return str(getattr(r, "outcome", "ok"))


def _execute(spec: LoadedSpec, a: Action) -> object:
    from reconciler.execute import drbd, mount, net, postgres, service

    kind = a.kind
    match kind:
        case Kind.STOP_SERVICE:
            service.stop(_service(spec, a.target))
        case Kind.START_SERVICE:
            service.start(_service(spec, a.target))
        case Kind.SET_PROMOTE_SECONDARIES:
            return _net(net.set_promote_secondaries, a)
        case Kind.REMOVE_ADDRESSES:
            return _net(net.remove_addresses, a)
        case Kind.ADD_ADDRESSES:
            return _net(net.add_addresses, a, spec)
        case Kind.ADOPT_ADDRESSES:
            return _net(net.adopt_addresses, a, spec)
        case Kind.UNMOUNT:
            mount.unmount(a.target)
        case Kind.MOUNT:
            r = _resource(spec, a.payload.resource if isinstance(a.payload, DrbdMount) else a.target)
            mount.mount(r.device, a.target, r.fstype, r.options)
        case Kind.DRBD_UP:
            return _drbd(drbd.up, spec, a)
        case Kind.DRBD_CONNECT:
            return _drbd(drbd.connect, spec, a)
        case Kind.DRBD_SECONDARY:
            return _drbd(drbd.secondary, spec, a)
        case Kind.DRBD_PRIMARY:
            return _drbd(drbd.primary, spec, a)
        case Kind.PG_STOP:
            return postgres.stop(_pg(spec))
        case Kind.PG_CRASH_RECOVER:
            return postgres.crash_recover(_pg(spec))
        case Kind.PG_CLONE:
            pg, s = _pg(spec), _src(a)
            return postgres.clone(pg, s.host, s.port, s.node)
        case Kind.PG_REWIND:
            pg, s = _pg(spec), _src(a)
            return postgres.rewind(pg, s.host, s.port, s.node)
        case Kind.PG_START_STANDBY:
            pg, s = _pg(spec), _src(a)
            return postgres.start_standby(pg, s.host, s.port, s.node)
        case Kind.PG_RETARGET:
            pg, s = _pg(spec), _src(a)
            return postgres.retarget(pg, s.host, s.port, s.node)
        case Kind.PG_START_PRIMARY:
            return postgres.start_primary(_pg(spec))
        case Kind.PG_PROMOTE:
            return postgres.promote(_pg(spec))
        case Kind.PG_CHECKPOINT:
            return postgres.checkpoint(_pg(spec))
        case Kind.AWAIT:
            return _nothing_to_run(a)
        case Kind.COORD_ACQUIRE:
            return _agent_only(a)
        case Kind.COORD_RELEASE:
            return _agent_only(a)
        case Kind.COORD_PUBLISH:
            return _agent_only(a)
        case Kind.COORD_WITHDRAW:
            return _agent_only(a)
        case Kind.PG_SYNC_ON:
            return postgres.set_sync(_pg(spec), (a.target,))
        case Kind.PG_SYNC_OFF:
            return postgres.set_sync(_pg(spec), ())
        case Kind.WATCHDOG_ARM:
            return _agent_only(a)
        case Kind.WATCHDOG_DISARM:
            return _agent_only(a)
        case _:
            assert_never(kind)
    return None


def one_line(msg: str, limit: int = 600) -> str:
    """A tool's output as one line: its first line, then the last line that names an error."""
    parts = [p.strip() for p in msg.replace(" | ", "\n").splitlines() if p.strip()]
    if not parts:
        return ""
    errs = [p for p in parts[1:] if any(k in p for k in ("error", "ERROR", "FATAL", "failed", "Failure"))]
    text = parts[0] + (" ... " + errs[-1] if errs else "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_action(spec: LoadedSpec, a: Action) -> Result:
    """Execute `a`; any failure becomes Result(ok=False) with a one-line reason."""
    if a.blocked:
        return Result(False, "blocked: " + "; ".join(a.waiting_on))
    try:
        out = _execute(spec, a)
    except ActionFailed as e:
        return Result(False, str(e))
    except Exception as e:  # a driver error is reported, never raised into the loop
        return Result(False, one_line(f"{type(e).__name__}: {e}"))
    return Result(True, str(out).splitlines()[0][:300] if out else "")
