"""Services: the `commands` backend against a real pidfile daemon (demo/svc_daemon.py,
run with this venv's python), and the systemd backend only where systemd is PID 1."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import _cmd
from reconciler.execute.service import ServiceError, start, stop
from reconciler.model import ServiceObs
from reconciler.observe import service as obs_service
from reconciler.observe.service import ServiceObserveError, parse_is_active, read_service, read_services
from reconciler.spec.models import CommandSet, Service

DAEMON = str(Path(__file__).parent.parent / "demo" / "svc_daemon.py")
PY = sys.executable


def daemon_service(pidfile: Path, *extra: str, name: str = "rc-test-daemon") -> Service:
    cmd = [PY, DAEMON]
    return Service(
        name=name,
        commands=CommandSet(
            start=[*cmd, "start", str(pidfile), *extra], stop=[*cmd, "stop", str(pidfile)],
            status=[*cmd, "status", str(pidfile)],
        ),
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def pidfile(tmp_path: Path) -> Iterator[Path]:
    pf = tmp_path / "daemon.pid"
    yield pf
    if pf.exists():  # never leave a daemon behind, whatever the test did
        pid = int(pf.read_text())
        if _alive(pid) and b"svc_daemon.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)


def test_commands_start_stop_really_waits(pidfile: Path) -> None:
    svc = daemon_service(pidfile, "--slow-stop")
    assert read_service(svc) == ServiceObs(active=False)
    start(svc)
    pid = int(pidfile.read_text())
    assert _alive(pid) and read_services([svc]) == {svc.name: ServiceObs(active=True)}
    start(svc)  # already running: the start script is not run again
    assert int(pidfile.read_text()) == pid
    t0 = time.monotonic()
    stop(svc)  # the stop script only signals; the daemon needs 1 s to exit
    assert time.monotonic() - t0 >= 0.9
    assert not _alive(pid)
    assert read_service(svc) == ServiceObs(active=False)
    stop(svc)  # already stopped: nothing to do


def test_commands_start_failure_is_reported(tmp_path: Path) -> None:
    svc = Service(name="rc-bad", commands=CommandSet(
        start=[PY, "-c", "import sys; sys.exit('cannot bind port 5432')"],
        stop=[PY, "-c", "pass"], status=[PY, "-c", "import sys; sys.exit(3)"],
    ))
    with pytest.raises(ServiceError, match="cannot start rc-bad: .*exit 1: cannot bind port 5432"):
        start(svc)


def test_commands_start_that_does_not_come_up(tmp_path: Path) -> None:
    svc = Service(name="rc-never", commands=CommandSet(
        start=[PY, "-c", "pass"], stop=[PY, "-c", "pass"], status=[PY, "-c", "import sys; sys.exit(3)"],
    ))
    t0 = time.monotonic()
    with pytest.raises(ServiceError, match="does not say running after the start"):
        start(svc, timeout=1.0)
    assert time.monotonic() - t0 < 5


def test_status_command_that_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(obs_service, "STATUS_TIMEOUT_S", 0.5)
    svc = Service(name="rc-hang", commands=CommandSet(
        start=[PY, "-c", "pass"], stop=[PY, "-c", "pass"], status=[PY, "-c", "import time; time.sleep(30)"],
    ))
    with pytest.raises(ServiceObserveError, match="timed out"):
        read_service(svc)


def test_unit_names_are_validated() -> None:
    for bad in ("-rf", "a b", "x;reboot", ""):
        with pytest.raises(ValueError):
            read_service(Service.model_construct(name=bad, commands=None))


@pytest.mark.parametrize(
    "out,expected",
    [
        ("active\n", ServiceObs(active=True)),
        ("reloading\n", ServiceObs(active=True)),
        ("inactive\n", ServiceObs(active=False)),
        ("failed\n", ServiceObs(active=False, failed=True)),
        ("activating\n", ServiceObs(active=False)),
        ("", None),  # e.g. "System has not been booted with systemd" goes to stderr, stdout empty
    ],
)
def test_parse_is_active(out: str, expected: ServiceObs | None) -> None:
    assert parse_is_active(out) == expected


def _systemd() -> bool:
    return os.path.isdir("/run/systemd/system")  # sd_booted(3)


def test_systemd_unavailable_is_an_error_not_inactive() -> None:
    if _systemd():
        pytest.skip("systemd is PID 1 here")
    with pytest.raises(ServiceObserveError):
        read_service(Service(name="rc-nonexistent.service"))


def test_systemd_start_stop() -> None:
    if not _systemd():
        pytest.skip("systemd is not PID 1 on this machine (CI containers have none)")
    if os.geteuid() != 0:
        pytest.skip("needs root to install a unit")
    name = f"rc-test-{uuid.uuid4().hex[:8]}.service"
    unit = Path("/run/systemd/system") / name
    unit.write_text(f"[Service]\nExecStart={PY} -c \"import time; time.sleep(600)\"\n")
    try:
        _cmd.run(["systemctl", "daemon-reload"], timeout=60)
        svc = Service(name=name)
        start(svc)
        assert read_service(svc) == ServiceObs(active=True)
        stop(svc)
        assert read_service(svc).active is False
    finally:
        _cmd.run(["systemctl", "stop", name], timeout=60)
        unit.unlink()
        _cmd.run(["systemctl", "daemon-reload"], timeout=60)
