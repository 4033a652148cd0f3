"""Run the spec's hooks: argv lists, no shell, a timeout, in the background.

A hook's program must be a file only root can change (`reconciler.trust`: root owns it and every
directory above it, nobody else can write them); otherwise it is refused and the refusal logged,
naming the fix.  The facts go in RECONCILER_* environment variables, never on a command line that
other users can read in /proc.  A hook never delays the agent: each event's hooks run one after
the other in a thread of their own, and whatever they do or fail to do is only logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler import _cmd, trust

log = logging.getLogger("reconciler")
MAX_VALUE_CHARS = 2000  # one environment value (a long waiting reason is cut, never a secret in it)


@dataclass(frozen=True)
class HookRun:
    argv: tuple[str, ...]
    ok: bool
    detail: str  # "exit 0 in 0.12s", "refused: ...", "timed out after 30s", ...


def _env(facts: Mapping[str, str]) -> dict[str, str]:
    env = {}
    for key, value in facts.items():
        one_line = " ".join(str(value).split())
        env[f"RECONCILER_{key.upper()}"] = one_line[:MAX_VALUE_CHARS]
    return env


def run_hook(argv: Sequence[str], facts: Mapping[str, str], timeout: float) -> HookRun:
    args = tuple(argv)
    try:
        trust.check_file(args[0], "hook program")
    except trust.UntrustedError as e:
        return HookRun(args, False, f"refused: {e}")
    t0 = time.monotonic()
    r = _cmd.run(args, timeout, env=_env(facts))
    secs = time.monotonic() - t0
    if r.missing:
        return HookRun(args, False, "program not found or not executable")
    if r.timed_out:
        return HookRun(args, False, f"timed out after {timeout:g}s (its process group was killed)")
    tail = " / ".join(r.stderr.strip().splitlines()[-2:])[:300]
    return HookRun(args, r.ok, f"exit {r.rc} in {secs:.2f}s" + (f": {tail}" if tail and not r.ok else ""))


def fire(event: str, hooks: Sequence[Sequence[str]], facts: Mapping[str, str], timeout: float,
         node: str) -> threading.Thread | None:
    """Run `hooks` for `event` in a background thread (returned, for tests to join); log each."""
    if not hooks:
        return None
    all_facts = {"event": event, **facts}

    def go() -> None:
        for argv in hooks:
            r = run_hook(argv, all_facts, timeout)
            (log.info if r.ok else log.warning)(f"{node}: hook {event} {r.argv[0]}: {r.detail}")

    t = threading.Thread(target=go, name=f"hook-{event}", daemon=True)
    t.start()
    return t
