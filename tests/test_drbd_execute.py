"""DRBD actions: the failure classifier on verbatim drbdadm stderr, the argv we run checked
against drbd-utils' own dry run (`drbdadm -d`, 8.4 code path forced with
DRBD_DRIVER_VERSION_OVERRIDE), the retry policy, and real calls on this module-less host."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from reconciler import _cmd
from reconciler.execute import drbd as ex
from reconciler.execute.drbd import Outcome, classify, drbdadm_argv, retry
from reconciler.spec.models import DrbdResource
from tests.conftest import need

FIX = Path(__file__).parent / "fixtures" / "drbd"


def err(name: str) -> tuple[int, str]:
    rc = int(name.split(".rc")[1].split(".")[0])
    return rc, (FIX / name).read_text()


CASES = [  # (fixture, verb, outcome, code, text)
    ("err_primary_no_uptodate.rc17.lab.txt", "primary", Outcome.NO_UPTODATE, -2, "Need access to UpToDate data"),
    ("err_primary_two_primaries.rc11.lab.txt", "primary", Outcome.TWO_PRIMARIES, -1,
     "Multiple primaries not allowed by config"),
    ("err_secondary_held_open.rc11.lab.txt", "secondary", Outcome.HELD_OPEN, -12, "Device is held open by someone"),
    ("err_down_held_open.rc11.lab.txt", "down", Outcome.HELD_OPEN, -12, "Device is held open by someone"),
    ("err_secondary_minor_not_allocated.rc10.issue.txt", "secondary", Outcome.ALREADY, 127,
     "Device minor not allocated"),
    ("err_secondary_minor_not_allocated.rc10.issue.txt", "primary", Outcome.NOT_CONFIGURED, 127,
     "Device minor not allocated"),
    ("err_connect_address_in_use.rc10.issue.txt", "connect", Outcome.ADDRESS_IN_USE, 102,
     "Local address(port) already in use."),
    ("err_primary_no_module.rc20.host.txt", "primary", Outcome.MODULE_MISSING, None,
     "Failed to modprobe drbd (No such file or directory)"),
    ("err_sh_status_no_module.rc20.host.txt", "up", Outcome.MODULE_MISSING, None,
     "Failed to modprobe drbd (No such file or directory)"),
    # modinfo's "Module drbd not found" noise must not hide drbdadm's config error (exit 10)
    ("err_connect_ip_not_found.rc10.host.txt", "connect", Outcome.CONFIG, None,
     "IP 10.99.0.11 not found on this host."),
    ("err_primary_not_defined.rc1.host.txt", "primary", Outcome.CONFIG, None,
     "'r9' not defined in your config (for this host)."),
]


@pytest.mark.parametrize("name,verb,outcome,code,text", CASES)
def test_classify_verbatim(name: str, verb: str, outcome: Outcome, code: int | None, text: str) -> None:
    rc, stderr = err(name)
    c = classify(verb, rc, stderr)
    assert (c.outcome, c.code, c.text) == (outcome, code, text)


def test_classify_kernel_info() -> None:
    rc, stderr = err("err_down_held_open.rc11.lab.txt")
    assert classify("down", rc, stderr).kernel_info == ("failed to demote",)
    rc, stderr = err("err_secondary_minor_not_allocated.rc10.issue.txt")
    assert classify("primary", rc, stderr).kernel_info == ("unknown minor",)


@pytest.mark.parametrize(
    "verb,rc,stderr,outcome",
    [  # texts from drbd.md §1.5-1.7 (state-code table [SRC] and esos#129 [REAL])
        ("primary", 11, "0: State change failed: (-7) Refusing to be Primary while peer is not outdated\n",
         Outcome.PEER_NOT_OUTDATED),
        ("secondary", 11, "0: State change failed: (-18) In transient state, retry after next state change\n",
         Outcome.TRANSIENT),
        ("primary", 11, "0: State change failed: (-19) Concurrent state changes detected and aborted\n",
         Outcome.TRANSIENT),
        ("primary", 11, "0: State change failed: (-10) State change was refused by peer node\n", Outcome.REFUSED),
        ("connect", 10, "r0: Failure: (162) Invalid configuration request\nadditional info from kernel:\n"
         "unknown resource\n", Outcome.NOT_CONFIGURED),
        ("up", 10, "0: Failure: (124) Device is attached to a disk (use detach first)\n", Outcome.ALREADY),
        ("up", 10, "0: Failure: (104) Can not open backing device.\n", Outcome.FAILED),
        ("primary", 20, "Could not stat /proc/drbd: No such file or directory\n"
         "Make sure that the DRBD kernel module is installed and can be loaded!\n", Outcome.MODULE_MISSING),
        ("secondary", 0, "Failed to modprobe drbd (No such file or directory)\n", Outcome.OK),
    ],
)
def test_classify_reference_texts(verb: str, rc: int, stderr: str, outcome: Outcome) -> None:
    assert classify(verb, rc, stderr).outcome is outcome


def test_classify_timeout_and_missing() -> None:
    assert classify("primary", None, "", timed_out=True).outcome is Outcome.TIMEOUT
    assert classify("primary", None, "", missing=True).outcome is Outcome.NOT_INSTALLED


def test_only_safe_outcomes_are_retried() -> None:
    assert {o for o in Outcome if o.retryable} == {Outcome.HELD_OPEN, Outcome.TRANSIENT}
    assert {o for o in Outcome if o.ok} == {Outcome.OK, Outcome.ALREADY}


def test_retry_policy() -> None:
    slept: list[float] = []
    seq = iter([Outcome.HELD_OPEN, Outcome.HELD_OPEN, Outcome.OK])
    last, tries = retry(lambda: next(seq), lambda o: o.retryable, ex.RETRY_DELAYS_S, slept.append)
    assert (last, tries, slept) == (Outcome.OK, 3, [0.2, 0.4])
    slept.clear()
    last, tries = retry(lambda: Outcome.HELD_OPEN, lambda o: o.retryable, ex.RETRY_DELAYS_S, slept.append)
    assert (last, tries) == (Outcome.HELD_OPEN, 5) and sum(slept) == pytest.approx(3.0)
    slept.clear()
    last, tries = retry(lambda: Outcome.NO_UPTODATE, lambda o: o.retryable, ex.RETRY_DELAYS_S, slept.append)
    assert (last, tries, slept) == (Outcome.NO_UPTODATE, 1, [])


def test_argv_builder() -> None:
    assert drbdadm_argv("primary", "r0") == ["drbdadm", "primary", "r0"]
    assert drbdadm_argv("up", "db.data-1", "/etc/drbd.conf") == ["drbdadm", "-c", "/etc/drbd.conf", "up", "db.data-1"]
    for bad in ("", "-r0", "r0;reboot", "r 0", "a" * 64, "../r0"):
        with pytest.raises(ValueError):
            drbdadm_argv("primary", bad)
    for verb in ("down", "disconnect", "invalidate", "primary --force"):
        with pytest.raises(ValueError):
            drbdadm_argv(verb, "r0")
    with pytest.raises(ValueError):
        drbdadm_argv("up", "r0", "relative.res")


def _config(tmp_path: Path) -> str:
    conf = tmp_path / "r0.res"
    conf.write_text(
        "global { usage-count no; }\n"
        "resource r0 {\n  protocol C;\n  device /dev/drbd0;\n  disk /dev/vda;\n  meta-disk internal;\n"
        f"  on {os.uname().nodename} {{ address 10.99.0.11:7789; }}\n"
        "  on peer-node { address 10.99.0.12:7789; }\n}\n"
    )
    return str(conf)


DRY_RUN_84 = {  # what drbd-utils' 8.4 path (drbdadm-84) executes for each of our argvs
    "up": [
        "drbdsetup-84 new-resource r0",
        "drbdsetup-84 new-minor r0 0 0",
        "drbdmeta 0 v08 /dev/vda internal apply-al",
        "drbdsetup-84 attach 0 /dev/vda /dev/vda internal",
        "drbdsetup-84 connect r0 ipv4:10.99.0.11:7789 ipv4:10.99.0.12:7789 --protocol=C",
    ],
    "connect": ["drbdsetup-84 connect r0 ipv4:10.99.0.11:7789 ipv4:10.99.0.12:7789 --protocol=C"],
    "primary": ["drbdsetup-84 primary 0"],
    "secondary": ["drbdsetup-84 secondary 0"],
}


@pytest.mark.parametrize("verb", ex.VERBS)
def test_argv_against_drbdadm_dry_run(tmp_path: Path, verb: str) -> None:
    need(shutil.which("drbdadm", path=_cmd.SYS_PATH) is not None, "needs drbd-utils (drbdadm)")
    argv = drbdadm_argv(verb, "r0", _config(tmp_path))
    dry = [argv[0], "-d", *argv[1:]]
    res = _cmd.run(dry, timeout=30, env={"DRBD_DRIVER_VERSION_OVERRIDE": "8.4.0"})
    assert res.rc == 0, res.describe()
    assert res.stdout.splitlines() == DRY_RUN_84[verb]
    for lever in ("--force", "--discard-my-data", "--overwrite-data-of-peer", "invalidate"):
        assert lever not in res.stdout


def _module_missing_here() -> bool:
    from reconciler.observe.drbd_kernel import gather_module_facts

    if os.path.exists("/proc/drbd"):
        return False
    f = gather_module_facts()
    return not any(k.kernel == f.running_kernel and k.has_drbd for k in f.installed)


def test_real_calls_without_a_module(tmp_path: Path) -> None:
    """On a host without DRBD (like this one) the real drbdadm fails and we say why and how to fix."""
    need(shutil.which("drbdadm", path=_cmd.SYS_PATH) is not None, "needs drbd-utils (drbdadm)")
    if not _module_missing_here():
        pytest.skip("this host has a drbd module: the module-missing path cannot be exercised")
    res = DrbdResource(name="r0", device="/dev/drbd0")
    conf = _config(tmp_path)
    with pytest.raises(ex.DrbdActionError) as e:
        ex.primary(res, config=conf)
    assert e.value.result.outcome is Outcome.MODULE_MISSING
    assert os.uname().release in str(e.value) and "reboot into" in str(e.value)
    assert ex.secondary(res, config=conf).outcome is Outcome.OK  # drbd-utils: demote "succeeds" with no module
    with pytest.raises(ex.DrbdActionError) as e:
        ex.connect(res, config=conf)  # 10.99.0.11 is not on this host: drbdadm's config check refuses
    assert e.value.result.outcome is Outcome.CONFIG
