"""Log lines: one per action (what, why, result, duration) and one per new wait, text or JSON.

Under systemd (JOURNAL_STREAM set) text lines carry no timestamp of their own: journald
adds one.  Secrets never reach these lines: actions carry no passwords.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from reconciler.agent.loop import Acted, OperatorNeeded, Retrying, Waiting
from reconciler.execute.dispatch import Result
from reconciler.plan.render import title

log = logging.getLogger("reconciler")


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": round(record.created, 3), "level": record.levelname.lower(), "msg": record.getMessage()}
        doc.update(getattr(record, "fields", {}))
        return json.dumps(doc)


def setup(fmt: str = "text", level: int = logging.INFO) -> None:
    h = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        h.setFormatter(_Json())
    elif os.environ.get("JOURNAL_STREAM"):
        h.setFormatter(logging.Formatter("%(message)s"))
    else:
        h.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(message)s", "%H:%M:%S"))
    root = logging.getLogger("reconciler")
    root.handlers[:] = [h]
    root.setLevel(level)
    root.propagate = False


def action_line(node: str, o: Acted | Retrying) -> None:
    """One line per action that ran: what, why, result, duration (also for `apply`)."""
    if isinstance(o, Retrying) and o.not_in_effect:
        not_in_effect_line(node, o)
        return
    a, r = o.action, o.result or Result(False)
    fields = {"node": node, "action": a.kind.value, "target": a.target, "reason": a.reason,
              "result": "ok" if r.ok else "failed", "detail": r.detail, "duration_s": round(o.seconds, 3)}
    text = f"{node}: {a.symbol} {title(a)}: {fields['result']} in {o.seconds:.3f}s"
    if r.detail:
        text += f" ({r.detail})"
    text += f" because: {a.reason}"
    (log.info if r.ok else log.error)(text, extra={"fields": fields})


def not_in_effect_line(node: str, o: Retrying) -> None:
    """An action that ran, but whose effect the next observation did not show."""
    a = o.action
    fields = {"node": node, "action": a.kind.value, "target": a.target, "result": "not_in_effect",
              "detail": o.reason, "attempt": o.attempt}
    log.error(f"{node}: {a.symbol} {title(a)}: {o.reason} (attempt {o.attempt})", extra={"fields": fields})


def waiting_line(node: str, o: Waiting | OperatorNeeded, recheck_s: float | None = None) -> None:
    """A waiting action; for one only an operator can unblock, said once with when it is re-checked."""
    a = o.action
    fields: dict[str, object] = {"node": node, "action": a.kind.value, "target": a.target,
                                 "waiting": [g.text for g in o.guards] or [o.reason]}
    if isinstance(o, OperatorNeeded):
        fields.update(operator=True, recheck_s=recheck_s)
        log.warning(f"{node}: waiting: operator needed: {title(a)}: {o.reason}", extra={"fields": fields})
        return
    log.info(f"{node}: waiting: {title(a)}: {o.reason}", extra={"fields": fields})


def now() -> float:
    return time.monotonic()
