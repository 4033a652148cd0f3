"""Log lines: one per action (what, why, result, duration), text or JSON.

Under systemd (JOURNAL_STREAM set) text lines carry no timestamp of their own: journald
adds one.  Secrets never reach these lines: actions carry no passwords.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from reconciler.agent.cycle import Outcome
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


def action_line(node: str, o: Outcome) -> None:
    a, r = o.action, o.result
    if a is None or r is None:
        return
    fields = {"node": node, "action": a.kind.value, "target": a.target, "reason": a.reason,
              "result": "ok" if r.ok else "failed", "detail": r.detail, "duration_s": round(o.seconds, 3)}
    text = f"{node}: {a.symbol} {title(a)}: {fields['result']} in {o.seconds:.3f}s"
    if r.detail:
        text += f" ({r.detail})"
    text += f" because: {a.reason}"
    (log.info if r.ok else log.error)(text, extra={"fields": fields})


def waiting_line(node: str, o: Outcome) -> None:
    a = o.action
    if a is None:
        return
    fields = {"node": node, "action": a.kind.value, "target": a.target, "waiting": list(a.waiting_on)}
    log.info(f"{node}: waiting: {title(a)}: {'; '.join(a.waiting_on)}", extra={"fields": fields})


def now() -> float:
    return time.monotonic()
