"""DRBD actions: `drbdadm [-c CONF] up|connect|primary|secondary <res>`, classified.

Each call is an argv list with its own timeout (drbdadm's own child timeouts are up to
600 s).  Failures are classified from exit code and stderr (drbdadm 8.4's retcodes):
DRBD's safety refusals are reported, never worked around; only (-12) "held open" and
(-18)/(-19) transient states are retried, a few times with backoff.  The data-loss options
of drbdadm are never built here; tests/test_drbd_safety.py greps the package for them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import TypeVar

from reconciler import _cmd
from reconciler.observe import drbd_kernel
from reconciler.observe.drbd import DrbdObserveError, check_name, read_drbd
from reconciler.observe.openers import device_openers
from reconciler.spec.models import DrbdResource

VERBS = ("up", "connect", "primary", "secondary")
TIMEOUT_S = 30.0
RETRY_DELAYS_S = (0.2, 0.4, 0.8, 1.6)  # 5 tries spread over about 3 s

_STATE_RE = re.compile(r"State change failed: \((-?\d+)\) ?(.*)")
_FAILURE_RE = re.compile(r"Failure: \((\d+)\) (.*)")
_MODULE_RE = re.compile(
    r"Could not stat /proc/drbd|Failed to modprobe drbd|modprobe: FATAL: Module drbd not found"
    r"|Could not connect to 'drbd' generic netlink family"
)


class Outcome(str, Enum):
    OK = "ok"
    ALREADY = "already"  # the postcondition already held: success
    HELD_OPEN = "held_open"  # (-12) device in use: cannot demote
    TWO_PRIMARIES = "two_primaries"  # (-1) the peer is Primary
    NO_UPTODATE = "no_uptodate"  # (-2) no UpToDate data to promote with
    PEER_NOT_OUTDATED = "peer_not_outdated"  # (-7) fencing: peer not known Outdated
    TRANSIENT = "transient"  # (-18)/(-19): retry after the next state change
    NOT_CONFIGURED = "not_configured"  # (127)/(158)/(162): the resource is not up
    ADDRESS_IN_USE = "address_in_use"  # (102)/(125) on connect: ours, or a port clash
    MODULE_MISSING = "module_missing"  # no drbd kernel module
    CONFIG = "config"  # drbdadm refused the configuration file (its exit 1/2/10/20)
    REFUSED = "refused"  # any other state-change refusal
    FAILED = "failed"  # any other kernel Failure or unknown error
    TIMEOUT = "timeout"
    NOT_INSTALLED = "not_installed"  # no drbdadm

    @property
    def ok(self) -> bool:
        return self in (Outcome.OK, Outcome.ALREADY)

    @property
    def retryable(self) -> bool:
        return self in (Outcome.HELD_OPEN, Outcome.TRANSIENT)


_STATE_CODES = {-1: Outcome.TWO_PRIMARIES, -2: Outcome.NO_UPTODATE, -7: Outcome.PEER_NOT_OUTDATED,
                -9: Outcome.ALREADY, -12: Outcome.HELD_OPEN, -18: Outcome.TRANSIENT, -19: Outcome.TRANSIENT}
_ALREADY_FAILURES = {"up": {124, 161}, "secondary": {127, 158, 162}}


@dataclass(frozen=True)
class Classified:
    outcome: Outcome
    code: int | None = None  # DRBD's state-change (negative) or Failure (1xx) code
    text: str = ""  # DRBD's text for that code, or the last stderr line
    kernel_info: tuple[str, ...] = ()  # lines after "additional info from kernel:"


def _kernel_info(lines: list[str]) -> tuple[str, ...]:
    if "additional info from kernel:" not in lines:
        return ()
    rest = lines[lines.index("additional info from kernel:") + 1:]
    return tuple(ln for ln in rest if ln and not ln.startswith("Command '"))


def classify(verb: str, rc: int | None, stderr: str, timed_out: bool = False, missing: bool = False) -> Classified:
    """Pure: what a drbdadm exit code and stderr mean for `verb`."""
    if missing:
        return Classified(Outcome.NOT_INSTALLED)
    if timed_out:
        return Classified(Outcome.TIMEOUT)
    if rc == 0:
        return Classified(Outcome.OK)
    lines = [ln.strip() for ln in stderr.splitlines()]
    info = _kernel_info(lines)
    for ln in lines:
        if m := _STATE_RE.search(ln):
            code = int(m.group(1))
            return Classified(_STATE_CODES.get(code, Outcome.REFUSED), code, m.group(2).strip(), info)
        if m := _FAILURE_RE.search(ln):
            code = int(m.group(1))
            if code in _ALREADY_FAILURES.get(verb, ()):
                outcome = Outcome.ALREADY
            elif code in (127, 158, 162):
                outcome = Outcome.NOT_CONFIGURED
            elif verb == "connect" and code in (102, 125):
                outcome = Outcome.ADDRESS_IN_USE
            else:
                outcome = Outcome.FAILED
            return Classified(outcome, code, m.group(2).strip(), info)
    last = next((ln for ln in reversed(lines) if ln and not ln.startswith("Command '")), "")
    if _MODULE_RE.search(stderr):
        return Classified(Outcome.MODULE_MISSING, text=last)
    if rc in (1, 2, 10) or "Can not open" in stderr:  # drbdadm's own usage/syntax/config errors
        return Classified(Outcome.CONFIG, text=last)
    return Classified(Outcome.FAILED, text=last)


@dataclass(frozen=True)
class DrbdResult:
    verb: str
    resource: str
    outcome: Outcome
    code: int | None
    text: str
    message: str  # for humans: what happened and what to do
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.outcome.ok


class DrbdActionError(Exception):
    """A DRBD action did not reach its postcondition; `.result` says why."""

    def __init__(self, result: DrbdResult):
        super().__init__(result.message)
        self.result = result


def drbdadm_argv(verb: str, name: str, config: str | None = None) -> list[str]:
    """The exact argv run for `verb`; only the four verbs above exist, with no options."""
    if verb not in VERBS:
        raise ValueError(f"unsupported drbdadm verb {verb!r}")
    check_name(name)
    if config is not None and (not config.startswith("/") or "\x00" in config):
        raise ValueError(f"DRBD config path must be absolute: {config!r}")
    return ["drbdadm", *(["-c", config] if config else []), verb, name]


T = TypeVar("T")


def retry(attempt: Callable[[], T], again: Callable[[T], bool], delays: Sequence[float],
          sleep: Callable[[float], None] = time.sleep) -> tuple[T, int]:
    """Call `attempt` until `again(result)` is False or the delays run out; (last result, tries)."""
    result = attempt()
    tries = 1
    for delay in delays:
        if not again(result):
            break
        sleep(delay)
        result = attempt()
        tries += 1
    return result, tries


def _holders_text(device: str) -> str:
    openers = device_openers(device)
    if openers is None:
        return f"{device} is not a block device here"
    if not openers:
        return "no holder is visible to this process (a kernel user or another PID namespace?)"
    return "; ".join(openers)


def _message(verb: str, res: DrbdResource, c: Classified, stderr: str, tries: int) -> str:
    """One paragraph for the operator: what DRBD said and what to do about it."""
    what = f"drbdadm {verb} {res.name}"
    said = f"({c.code}) {c.text}" if c.code is not None else c.text
    info = f" [kernel: {'; '.join(c.kernel_info)}]" if c.kernel_info else ""
    o = c.outcome
    if o is Outcome.HELD_OPEN:
        return (f"{what}: {res.device} is held open, DRBD refuses to demote it: {said}, "
                f"still after {tries} tries over {sum(RETRY_DELAYS_S[:tries - 1]):.1f} s. "
                f"Holders: {_holders_text(res.device)}. Find them with `fuser -vm {res.device}` "
                f"or `lsof {res.device}`, stop them and unmount, then demote again.")
    if o is Outcome.TWO_PRIMARIES:
        return f"{what}: the peer is Primary: {said}. Demote the peer first."
    if o is Outcome.NO_UPTODATE:
        return f"{what}: the local disk is not UpToDate: {said}. Not promoting; this tool never forces it."
    if o is Outcome.PEER_NOT_OUTDATED:
        return (f"{what}: fencing is configured and the peer is not known to be Outdated: {said}. "
                "Reconnect to the peer, or declare it fenced once it is verified down.")
    if o is Outcome.TRANSIENT:
        return f"{what}: DRBD stayed in a transient state after {tries} tries: {said}. It will be retried."
    if o is Outcome.NOT_CONFIGURED:
        return f"{what}: {res.name} is not up in the kernel: {said}{info}. Bring it up first."
    if o is Outcome.MODULE_MISSING:
        return f"{what}: " + drbd_kernel.diagnose_module(drbd_kernel.gather_module_facts(stderr))
    if o is Outcome.CONFIG:
        return f"{what}: drbdadm rejected the DRBD configuration: {said}"
    if o is Outcome.TIMEOUT:
        return f"{what}: did not finish within {TIMEOUT_S:.0f} s (killed)"
    if o is Outcome.NOT_INSTALLED:
        return f"{what}: drbdadm not found; install drbd-utils"
    if o.ok:
        return f"{what}: done" if o is Outcome.OK else f"{what}: nothing to do ({said})"
    return f"{what} failed: {said}{info}"


def _act(verb: str, res: DrbdResource, config: str | None, retries: bool = False) -> DrbdResult:
    argv = drbdadm_argv(verb, res.name, config)

    def attempt() -> tuple[Classified, str]:
        r = _cmd.run(argv, timeout=TIMEOUT_S, env={"DRBD_DONT_WARN_ON_VERSION_MISMATCH": "1"})
        return classify(verb, r.rc, r.stderr, r.timed_out, r.missing), r.stderr

    delays = RETRY_DELAYS_S if retries else ()
    (c, stderr), tries = retry(attempt, lambda cs: cs[0].outcome.retryable, delays)
    return DrbdResult(verb, res.name, c.outcome, c.code, c.text, _message(verb, res, c, stderr, tries), tries)


def _done(result: DrbdResult) -> DrbdResult:
    if not result.ok:
        raise DrbdActionError(result)
    return result


def up(res: DrbdResource, *, config: str | None = None) -> DrbdResult:
    """Not configured -> attached and connecting.  Already attached counts as done."""
    return _done(_act("up", res, config))


def connect(res: DrbdResource, *, config: str | None = None) -> DrbdResult:
    """StandAlone -> connecting.  On "address in use" the state decides: ours already, or a clash."""
    result = _act("connect", res, config, retries=True)
    if result.outcome is Outcome.ADDRESS_IN_USE:
        try:
            obs = read_drbd([res])[res.name]
        except DrbdObserveError:
            obs = None
        if obs is not None and obs.configured and obs.connection != "StandAlone":
            msg = f"drbdadm connect {res.name}: already has a network configuration ({obs.connection})"
            return replace(result, outcome=Outcome.ALREADY, message=msg)
        msg = (f"drbdadm connect {res.name}: its local address/port is in use by something else: "
               f"({result.code}) {result.text}. Check `ss -ltnp` and the other resources' ports.")
        raise DrbdActionError(replace(result, outcome=Outcome.FAILED, message=msg))
    return _done(result)


def primary(res: DrbdResource, *, config: str | None = None) -> DrbdResult:
    """Secondary -> Primary.  DRBD's refusals (-1, -2, -7) are reported, never overridden."""
    return _done(_act("primary", res, config, retries=True))


def secondary(res: DrbdResource, *, config: str | None = None) -> DrbdResult:
    """Primary -> Secondary; retried while held open (-12), then the holders are named."""
    return _done(_act("secondary", res, config, retries=True))
