"""Run one planned action with the driver that owns it; the result is one line.

This is the only place that maps an action kind to a driver call.  It never decides
anything: guards were evaluated by the planner, and the loop observes again afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.address import Address
from reconciler.plan.actions import Action, Kind
from reconciler.spec import LoadedSpec
from reconciler.spec.models import DrbdResource, Postgres, Service


@dataclass(frozen=True)
class Result:
    ok: bool
    detail: str = ""


class ActionFailed(Exception):
    pass


def _service(spec: LoadedSpec, name: str) -> Service:
    for s in spec.spec.services:
        if s.name == name:
            return s
    raise ActionFailed(f"service {name} is not in the spec")


def _resource(spec: LoadedSpec, name: str) -> DrbdResource:
    for r in spec.spec.drbd:
        if r.name == name or r.mount == name:
            return r
    raise ActionFailed(f"DRBD resource {name} is not in the spec")


def _nothing_to_run(a: Action) -> str:
    raise ActionFailed(f"{a.target}: nothing to run; the state is read again on the next cycle")


def _pg(spec: LoadedSpec) -> Postgres:
    if spec.spec.postgres is None:
        raise ActionFailed("postgres is not in the spec")
    return spec.spec.postgres


def _src(a: Action) -> tuple[str, int, str]:
    host, port, node = a.param("host"), a.param("port"), a.param("node")
    if not host or not port or not node:
        raise ActionFailed(f"{a.kind.value}: no replication source")
    return host, int(port), node


_announcer = None
_jobs: list = []


def _announce(spec: LoadedSpec, iface: str, items: tuple[Address, ...]) -> None:
    """Queue gratuitous ARP / unsolicited NA for addresses just added or adopted, paced
    in the background so the loop goes on to start the services."""
    global _announcer
    from reconciler.execute.announce import Announcer

    if spec.spec.announce.count == 0:
        return
    if _announcer is None:
        _announcer = Announcer(spec.spec.announce.rate_limit_pps)
    _jobs[:] = [j for j in _jobs if not j.done.is_set()]
    _jobs.append(_announcer.submit(iface, items, spec.spec.announce))


def wait_for_announcements(timeout: float = 60.0) -> None:
    """For one-shot commands: let queued announcements finish before the process exits."""
    deadline = time.monotonic() + timeout
    for j in list(_jobs):
        j.done.wait(max(0.0, deadline - time.monotonic()))


def _net(fn: Callable, a: Action, spec: LoadedSpec | None = None) -> str:
    r = fn(a.target, a.items) if a.items else fn(a.target)
    if not r.ok:
        raise ActionFailed(r.summary())
    if spec is not None:
        _announce(spec, a.target, a.items)
    return r.summary()


def _drbd(fn: Callable, spec: LoadedSpec, a: Action) -> str:
    from reconciler.execute.drbd import DrbdActionError

    try:
        r = fn(_resource(spec, a.target))
    except DrbdActionError as e:
        raise ActionFailed(str(e).splitlines()[0]) from None
    return getattr(r, "outcome", "ok").__str__()


def _table(spec: LoadedSpec, a: Action) -> dict[Kind, Callable[[], object]]:
    from reconciler.execute import drbd, mount, net, postgres, service

    def do_mount() -> None:
        r = _resource(spec, a.param("resource") or a.target)
        mount.mount(r.device, a.target, r.fstype, r.options)

    return {
        Kind.STOP_SERVICE: lambda: service.stop(_service(spec, a.target)),
        Kind.START_SERVICE: lambda: service.start(_service(spec, a.target)),
        Kind.SET_PROMOTE_SECONDARIES: lambda: _net(net.set_promote_secondaries, a),
        Kind.REMOVE_ADDRESSES: lambda: _net(net.remove_addresses, a),
        Kind.ADD_ADDRESSES: lambda: _net(net.add_addresses, a, spec),
        Kind.ADOPT_ADDRESSES: lambda: _net(net.adopt_addresses, a, spec),
        Kind.UNMOUNT: lambda: mount.unmount(a.target),
        Kind.MOUNT: do_mount,
        Kind.DRBD_UP: lambda: _drbd(drbd.up, spec, a),
        Kind.DRBD_CONNECT: lambda: _drbd(drbd.connect, spec, a),
        Kind.DRBD_SECONDARY: lambda: _drbd(drbd.secondary, spec, a),
        Kind.DRBD_PRIMARY: lambda: _drbd(drbd.primary, spec, a),
        Kind.PG_STOP: lambda: postgres.stop(_pg(spec)),
        Kind.PG_CRASH_RECOVER: lambda: postgres.crash_recover(_pg(spec)),
        Kind.PG_CLONE: lambda: postgres.clone(_pg(spec), *_src(a)),
        Kind.PG_REWIND: lambda: postgres.rewind(_pg(spec), *_src(a)),
        Kind.PG_START_STANDBY: lambda: postgres.start_standby(_pg(spec), *_src(a)),
        Kind.PG_RETARGET: lambda: postgres.retarget(_pg(spec), *_src(a)),
        Kind.PG_START_PRIMARY: lambda: postgres.start_primary(_pg(spec)),
        Kind.PG_PROMOTE: lambda: postgres.promote(_pg(spec)),
        Kind.PG_CHECKPOINT: lambda: postgres.checkpoint(_pg(spec)),
        Kind.AWAIT: lambda: _nothing_to_run(a),
    }


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
        out = _table(spec, a)[a.kind]()
    except ActionFailed as e:
        return Result(False, str(e))
    except Exception as e:  # a driver error is reported, never raised into the loop
        return Result(False, one_line(f"{type(e).__name__}: {e}"))
    return Result(True, str(out).splitlines()[0][:300] if out else "")


def kinds_with_executor(spec: LoadedSpec) -> set[Kind]:
    dummy = Action(Kind.PG_CHECKPOINT, "postgres", "")
    return set(_table(spec, dummy))
