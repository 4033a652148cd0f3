"""One observation of this node: every driver's reading combined into a NodeObservation.

A driver that fails does not stop the others: its part is left at its "unknown" value and
the failure is recorded in `errors`, so the planner waits instead of acting on a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.model import DrbdObs, NodeObservation, PostgresObs
from reconciler.spec import LoadedSpec


def _try(errors: list[str], what: str, fn: Callable[[], Any], default: Any) -> Any:
    try:
        return fn()
    except Exception as e:  # a driver's failure is data for the planner, not a crash
        errors.append(NodeObservation.failure(what, e))
        return default


def _drbd(spec: LoadedSpec, errors: list[str]) -> dict[str, DrbdObs]:
    if not spec.model.drbd:
        return {}
    from reconciler.observe.drbd import DrbdModuleMissing, read_drbd

    try:
        return read_drbd(spec.model.drbd)
    except DrbdModuleMissing as e:
        errors.append(NodeObservation.failure("drbd", e))
        return dict(e.observations)
    except Exception as e:
        errors.append(NodeObservation.failure("drbd", e))
        return {}


def observe_node(spec: LoadedSpec, node: str, spec_digest: str | None = None) -> NodeObservation:
    from reconciler.observe.mount import read_mounts
    from reconciler.observe.net import read_interfaces
    from reconciler.observe.service import read_services

    s = spec.model
    errors: list[str] = []
    ifaces = _try(errors, "net", lambda: read_interfaces(sorted(spec.addresses)), {})
    drbd = _drbd(spec, errors)
    mounts = _try(errors, "mounts", lambda: read_mounts([r.mount for r in s.drbd if r.mount]), {})
    pg: PostgresObs | None = None
    if s.postgres is not None:
        from reconciler.observe.postgres import read_postgres

        cfg = s.postgres
        pg = _try(errors, "postgres", lambda: read_postgres(cfg), None)
    services = _try(errors, "services", lambda: read_services(s.services), {})
    return NodeObservation(
        node=node,
        spec_digest=spec_digest,
        interfaces=ifaces,
        drbd=drbd,
        mounts=mounts,
        postgres=pg,
        services=services,
        errors=tuple(errors),
    )
