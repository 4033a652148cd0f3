"""Shared test plumbing.

`need(ok, reason)` skips a test whose facility (root, network namespaces, PostgreSQL,
the VMs) is missing; with RECONCILER_REQUIRE_ALL=1 (set by .ci/run) it fails instead,
so a CI run can never count a skipped real-component test as a pass.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

REQUIRE_ALL = os.environ.get("RECONCILER_REQUIRE_ALL") == "1"


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (a CI timeout, `kill`) ends the run like Ctrl-C does: pytest then runs every
    # fixture's teardown, so VMs, namespaces and servers the tests started go with it.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The reboot and power-cut scenarios (tests/test_lab_reboots.py) take longer than CI
    # allows: they run only when asked for by name (`-m reboots`), deselected otherwise (not
    # skipped: a skip would fail a RECONCILER_REQUIRE_ALL run).
    if "reboots" in (config.option.markexpr or ""):
        return
    keep = [i for i in items if i.get_closest_marker("reboots") is None]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("reboots") is not None])
        items[:] = keep


def need(ok: bool, reason: str) -> None:
    if ok:
        return
    if REQUIRE_ALL:
        pytest.fail(f"RECONCILER_REQUIRE_ALL=1 but {reason}")
    pytest.skip(reason)


def need_root() -> None:
    need(os.geteuid() == 0, "needs root")


def need_netns() -> None:
    need_root()
    need(shutil.which("ip") is not None, "needs iproute2 (ip)")
    need(os.path.exists("/proc/self/ns/net"), "needs network namespaces")


PG_BIN = os.environ.get("RECONCILER_PG_BIN", "/usr/lib/postgresql/15/bin")


def need_lab() -> None:
    """What the two-VM lab (lab/) needs on the host."""
    from lab import initrd

    need_root()
    need(shutil.which("qemu-system-x86_64") is not None, "needs qemu-system-x86 (scripts/setup installs it)")
    need(os.path.exists(initrd.BUSYBOX), "needs busybox-static")
    try:
        initrd.find_kernel()
    except FileNotFoundError as e:
        need(False, str(e))


def need_postgres() -> None:
    need_root()
    need(os.path.exists(os.path.join(PG_BIN, "pg_ctl")), f"needs PostgreSQL 15 in {PG_BIN}")


@pytest.fixture
def story(run: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The VM tiers' scenarios (test_e2e_lab, test_lab_failover, test_lab_reboots, test_lab_mail) share one lab
    session, the module's `run`: each scenario builds on the state the previous one left, so
    it is skipped when an earlier one failed, and its own failure is recorded."""
    if run.failed:
        pytest.skip(f"an earlier scenario failed ({run.failed}); these scenarios build on each other")
    failed_before = request.session.testsfailed
    yield run
    if request.session.testsfailed > failed_before:
        run.failed = request.node.name


def need_etcd() -> None:
    need_netns()
    need(shutil.which("etcd") is not None, "needs etcd 3.4 (Debian's etcd-server; scripts/setup installs it)")
