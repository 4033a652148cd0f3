"""The Primary's services and floating addresses change hands as one (plan/handover.py).

Specs without DRBD and PostgreSQL, where nothing else stands between the two nodes'
services: the new Primary starts no service and adds no address until the peer runs none
of its services and holds none of the addresses this tool tagged, old ones included, or
holds them but serves nothing.
"""

from __future__ import annotations

import pytest

from reconciler.address import parse
from reconciler.model import AddressObs, InterfaceObs, NodeObservation, ServiceObs
from reconciler.plan.actions import Kind
from reconciler.plan.planner import plan
from reconciler.plan.render import human
from reconciler.spec.load import load_spec


def spec(primary: str, addresses: list[str] | None, fenced: str = "[]"):
    fi = ("floating_ips:\n  interface: eth0\n  addresses: [" + ", ".join(addresses) + "]\n") if addresses is not None else ""
    text = (f"cluster: c\nnodes:\n  mx1: {{address: 10.0.0.1}}\n  mx2: {{address: 10.0.0.2}}\n"
            f"primary: {primary}\nfenced: {fenced}\n{fi}services:\n  - name: greenarrow\n  - name: smtp\n")
    return load_spec("cluster.yaml", text.encode())


def obs(node: str, running: tuple[str, ...] = (), owned: tuple[str, ...] = (), errors: tuple[str, ...] = (),
        iface: bool = True) -> NodeObservation:
    ifaces = {"eth0": InterfaceObs(addresses=tuple(AddressObs(address=a, owned=True) for a in owned))} if iface else {}
    services = {s: ServiceObs(active=s in running) for s in ("greenarrow", "smtp")}
    return NodeObservation(node=node, interfaces=ifaces, services=services, errors=errors)


def waits(p, kind: Kind) -> list[str]:
    return [w for a in p.actions if a.kind is kind for w in a.waiting_on]


def test_switch_and_new_address_list_in_one_commit_waits_for_the_old_primary():
    """The first failing sequence the unseeded search found: mx2 named Primary with a new address list while
    mx1 still runs smtp and holds the old address."""
    s = spec("mx2", ["10.9.1.5/32"])
    mx1 = obs("mx1", running=("smtp",), owned=("10.9.0.10/24",))
    p = plan(s, "mx2", obs("mx2"), mx1)
    assert [a.kind for a in p.actions] == [Kind.ADD_ADDRESSES, Kind.START_SERVICE, Kind.START_SERVICE]
    assert all(a.blocked for a in p.actions)
    assert waits(p, Kind.ADD_ADDRESSES) == [
        "peer mx1 still runs smtp and holds 10.9.0.10/24 on eth0: the Primary's services and addresses "
        "move only once the peer has released all of them"]
    # once mx1 has stopped smtp it still holds its old address, but serves nothing on it (the
    # one overlap allowed): mx2 goes ahead
    p = plan(s, "mx2", obs("mx2"), obs("mx1", owned=("10.9.0.10/24",)))
    assert not any(a.blocked for a in p.actions)
    assert any(g.text.startswith("peer mx1 still holds 10.9.0.10/24 on eth0 but runs none of the services")
               for a in p.actions for g in a.guards)
    # released everything: the address goes first, then the services, unguarded
    p = plan(s, "mx2", obs("mx2"), obs("mx1"))
    assert not any(a.blocked for a in p.actions)


def test_services_without_floating_addresses_wait_for_the_peers_services():
    for addresses in (None, []):  # no floating_ips section; an empty list on an interface
        s = spec("mx2", addresses)
        p = plan(s, "mx2", obs("mx2", iface=addresses is not None), obs("mx1", running=("greenarrow",),
                                                                        iface=addresses is not None))
        assert [a.kind for a in p.actions] == [Kind.START_SERVICE, Kind.START_SERVICE]
        assert all(a.blocked for a in p.actions)
        assert [w.split(":")[0] for w in waits(p, Kind.START_SERVICE)] == ["peer mx1 still runs greenarrow"] * 2
        p = plan(s, "mx2", obs("mx2", iface=addresses is not None), obs("mx1", iface=addresses is not None))
        assert p.actions and not any(a.blocked for a in p.actions)


def test_an_emptied_address_list_removes_ours_and_the_new_primary_waits_for_that():
    s = spec("mx2", [])
    old = plan(s, "mx1", obs("mx1", owned=("10.9.0.10/24",)), obs("mx2"))
    assert [(a.kind, a.items) for a in old.actions] == [(Kind.REMOVE_ADDRESSES, (parse("10.9.0.10/24"),))]
    new = plan(s, "mx2", obs("mx2"), obs("mx1", running=("smtp",), owned=("10.9.0.10/24",)))
    assert waits(new, Kind.START_SERVICE)[0].startswith("peer mx1 still runs smtp and holds 10.9.0.10/24 on eth0:")
    new = plan(s, "mx2", obs("mx2"), obs("mx1", owned=("10.9.0.10/24",)))  # serving nothing there
    assert not any(a.blocked for a in new.actions)


@pytest.mark.parametrize("fenced", ["[]", "[mx1]"])
def test_unreachable_peer_holds_the_start_unless_declared_fenced(fenced: str):
    p = plan(spec("mx2", None, fenced=fenced), "mx2", obs("mx2", iface=False), None)
    assert [a.kind for a in p.actions] == [Kind.START_SERVICE, Kind.START_SERVICE]
    if fenced == "[]":
        assert all(a.blocked for a in p.actions)
        assert "peer mx1 is unreachable: cannot confirm it runs none of the services" in waits(p, Kind.START_SERVICE)[0]
    else:
        assert not any(a.blocked for a in p.actions)


def test_an_observed_peer_is_checked_even_when_declared_fenced():
    p = plan(spec("mx2", None, fenced="[mx1]"), "mx2", obs("mx2", iface=False), obs("mx1", running=("smtp",), iface=False))
    assert all(a.blocked for a in p.actions)


def test_a_peer_that_could_not_read_its_services_or_addresses_holds_the_start():
    s = spec("mx2", ["10.9.1.5/32"])
    for part in ("services", "net"):
        peer = obs("mx1", errors=(NodeObservation.failure(part, "systemctl timed out"),))
        p = plan(s, "mx2", obs("mx2"), peer)
        assert all(a.blocked for a in p.actions if a.kind is Kind.START_SERVICE)
        assert waits(p, Kind.START_SERVICE)[0] == f"peer mx1 could not observe its {part}: systemctl timed out"


def test_the_wait_is_shown_in_the_plan():
    s = spec("mx2", ["10.9.1.5/32"])
    text = human(plan(s, "mx2", obs("mx2"), obs("mx1", running=("greenarrow", "smtp"))), "c", "mx2")
    assert "waiting: peer mx1 still runs greenarrow (and 1 more): the Primary's services" in text
