"""The README's first command works: the demo runs end to end and loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import need_netns, need_postgres

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_demo_runs_end_to_end():
    need_netns()
    need_postgres()
    r = subprocess.run([sys.executable, "-m", "demo"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "0 missing on the new primary" in r.stdout
    assert "+ primary: mx2" in r.stdout and "Write outage seen by the client" in r.stdout
    assert not os.path.exists("/run/reconciler-demo"), "the demo left its directory behind"


@pytest.mark.slow
def test_automatic_demo_runs_end_to_end():
    """`scripts/demo --automatic`: the Primary cut off mid-load, the takeover, 0 commits lost."""
    need_netns()
    need_postgres()
    from tests.conftest import need_etcd

    need_etcd()
    r = subprocess.run([sys.executable, "-m", "demo.automatic"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "0 missing on the new primary" in r.stdout and "mx2 took the leader key over" in r.stdout
    assert "Last      failover: epoch 2 by mx2" in r.stdout
    assert "mx1 is a streaming standby of mx2" in r.stdout
