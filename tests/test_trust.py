"""Root acts only on what root controls (issue 11, points 2 and 6): real files owned by the
real user `nobody`, real modes, real git, the real CLI in a subprocess.

Each attack test makes a spec whose service `status:` command creates MARKER: observing
the node runs it as root, so MARKER existing afterwards means root ran a command that
someone else wrote."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import trust
from reconciler.agent.source import GitSource, SourceError
from reconciler.model import NodeObservation
from tests.conftest import need, need_root
from tests.gitrepo import bare_observe, commit_file, git, init_repo, minimal_spec, secret_file, write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EVIL = """cluster: t
nodes:
  mx1: {{address: 127.0.0.1}}
primary: mx1
agent:
  peer_secret_file: {secret}
services:
  - name: evil
    commands:
      start: [/bin/sh, -c, "touch {marker}.start"]
      stop: [/bin/true]
      status: [/bin/sh, -c, "touch {marker}"]
"""


@pytest.fixture
def nobody() -> int:
    need_root()
    try:
        uid = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        uid = None
    need(uid is not None, "needs the user nobody")
    assert uid is not None
    return uid


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *argv], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def _evil_spec(d: Path, secret: str = "/nonexistent") -> tuple[Path, Path]:
    marker = d / "MARKER"
    spec = d / "cluster.yaml"
    spec.write_text(EVIL.format(marker=marker, secret=secret))
    return spec, marker


def _one_line_refusal(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


# ---- the spec: `plan` against the live node ------------------------------------------------


def test_plan_refuses_a_spec_of_nobody_world_writable_and_runs_nothing(tmp_path: Path, nobody: int) -> None:
    spec, marker = _evil_spec(tmp_path)
    os.chown(spec, nobody, -1)
    os.chmod(spec, 0o666)
    r = _cli("plan", str(spec), "--node", "mx1")
    assert not marker.exists(), "root ran the status command of a spec nobody owns"
    _one_line_refusal(r, str(spec), f"chown root {spec}", f"chmod go-w {spec}")


def test_plan_refuses_a_spec_in_a_directory_others_can_write(tmp_path: Path) -> None:
    need_root()
    d = tmp_path / "shared"
    d.mkdir()
    spec, marker = _evil_spec(d)
    os.chmod(d, 0o777)
    r = _cli("plan", str(spec), "--node", "mx1")
    assert not marker.exists()
    _one_line_refusal(r, str(spec), f"chmod go-w {d}")


def test_validate_and_plan_from_snapshots_run_no_command_and_read_any_spec(tmp_path: Path, nobody: int) -> None:
    """Offline commands need no trust: they must run nothing (the status command included)."""
    spec, marker = _evil_spec(tmp_path)
    os.chown(spec, nobody, -1)
    os.chmod(spec, 0o666)
    r = _cli("validate", str(spec))
    assert r.returncode == 0, r.stderr
    snap = tmp_path / "mx1.json"
    snap.write_text(NodeObservation(node="mx1").to_json())
    r = _cli("plan", str(spec), "--node", "mx1", "--observed", str(snap))
    assert r.returncode == 2 and "start service evil" in r.stdout, r.stdout + r.stderr
    assert not marker.exists(), "an offline command ran the spec's status command"


# ---- saved plans ----------------------------------------------------------------------------


def _forged_plan(path: Path, spec: Path) -> None:
    """What someone who can write the plan file writes: a plan naming their spec, with its
    true digest (so the spec check passes and the next step, observing, would run)."""
    doc = {"kind": "reconciler-saved-plan", "saved_format": 1, "node": "mx1",
           "source": {"type": "file", "path": str(spec)},
           "spec_digest": hashlib.sha256(spec.read_bytes()).hexdigest(), "revision": None,
           "observed_fingerprint": "0" * 64, "plan": {"changes": []}}
    path.write_text(json.dumps(doc))


def test_apply_refuses_a_world_writable_saved_plan_before_observing(tmp_path: Path, nobody: int) -> None:
    spec, marker = _evil_spec(tmp_path)
    os.chown(spec, nobody, -1)
    saved = tmp_path / "plan.json"
    _forged_plan(saved, spec)
    os.chmod(saved, 0o666)
    r = _cli("apply", str(saved))
    assert not marker.exists(), "apply PLAN observed (ran the status command) before refusing"
    _one_line_refusal(r, f"saved plan {saved}", f"chmod go-w {saved}")


def test_apply_refuses_a_saved_plan_naming_a_spec_of_nobody(tmp_path: Path, nobody: int) -> None:
    spec, marker = _evil_spec(tmp_path)
    os.chown(spec, nobody, -1)
    saved = tmp_path / "plan.json"
    _forged_plan(saved, spec)
    os.chmod(saved, 0o600)
    r = _cli("apply", str(saved))
    assert not marker.exists(), "apply PLAN ran the status command of a spec nobody owns"
    _one_line_refusal(r, f"spec {spec}", f"chown root {spec}")


def test_apply_plan_shows_the_spec_and_the_actions_before_running_them(tmp_path: Path) -> None:
    need_root()
    started = tmp_path / "started"
    spec = tmp_path / "cluster.yaml"
    spec.write_text(EVIL.format(marker=tmp_path / "observed", secret="/nonexistent").replace(
        f'status: [/bin/sh, -c, "touch {tmp_path / "observed"}"]', f'status: [/bin/sh, -c, "test -e {started}"]'
    ).replace(f'"touch {tmp_path / "observed"}.start"', f'"touch {started}"'))
    saved = tmp_path / "plan.json"
    r = _cli("plan", str(spec), "--node", "mx1", "-out", str(saved))
    assert r.returncode == 2, r.stdout + r.stderr
    r = _cli("apply", str(saved))
    assert r.returncode == 0, r.stdout + r.stderr
    digest = hashlib.sha256(spec.read_bytes()).hexdigest()
    first, second = r.stdout.splitlines()[:2]
    assert first == f"Saved plan {saved}: 1 action(s) on node mx1, from the spec {spec} (digest {digest[:12]}):"
    assert second.strip() == "start service evil"
    assert started.exists() and "Apply complete: 1 of the saved plan's 1 action(s) ran." in r.stdout


# ---- files the spec names -------------------------------------------------------------------


def test_plan_refuses_an_ips_file_others_can_write_validate_reads_it(tmp_path: Path) -> None:
    need_root()
    ips = tmp_path / "ips"
    ips.write_text("10.9.0.1/32\n")
    os.chmod(ips, 0o666)
    spec = tmp_path / "cluster.yaml"
    spec.write_text(minimal_spec() + f"floating_ips:\n  interface: lo\n  ips_file: {ips}\n")
    assert _cli("validate", str(spec)).returncode == 0
    r = _cli("plan", str(spec), "--node", "mx1")
    _one_line_refusal(r, f"ips_file {ips}", f"chmod go-w {ips}")


def test_plan_refuses_a_readable_replication_password_file(tmp_path: Path) -> None:
    need_root()
    pw = tmp_path / "replication.password"
    pw.write_text("sekrit\n")
    os.chmod(pw, 0o644)
    spec = tmp_path / "cluster.yaml"
    spec.write_text(minimal_spec() + "postgres:\n  data_dir: /nonexistent/pg\n  bin_dir: /nonexistent/bin\n"
                    f"  password_file: {pw}\n")
    r = _cli("plan", str(spec), "--node", "mx1")
    _one_line_refusal(r, f"replication password file {pw}", f"chmod 600 {pw}")
    assert "sekrit" not in r.stdout + r.stderr


def test_read_password_refuses_a_file_of_nobody(tmp_path: Path, nobody: int) -> None:
    from reconciler.execute.pgconf import read_password
    from reconciler.spec.models import Postgres

    pw = tmp_path / "replication.password"
    pw.write_text("sekrit\n")
    os.chmod(pw, 0o600)
    cfg = Postgres(data_dir="/nonexistent/pg", bin_dir="/nonexistent/bin", password_file=str(pw))
    assert read_password(cfg) == "sekrit"
    os.chown(pw, nobody, -1)
    from reconciler.pgrun import PostgresError  # an action's failure, reported like any other

    with pytest.raises(PostgresError, match=f"chown root {pw}"):
        read_password(cfg)


def test_plan_refuses_a_peer_secret_of_nobody(tmp_path: Path, nobody: int) -> None:
    secret = secret_file(str(tmp_path))
    os.chown(secret, nobody, -1)
    spec = tmp_path / "cluster.yaml"
    spec.write_text(minimal_spec(secret=secret))
    r = _cli("plan", str(spec), "--node", "mx1")
    _one_line_refusal(r, f"peer secret {secret}", f"chown root {secret}")


def test_load_secret_refuses_a_secret_in_a_directory_others_can_write(tmp_path: Path) -> None:
    from reconciler.peer import SecretError, load_secret

    need_root()
    d = tmp_path / "etc"
    d.mkdir()
    secret = secret_file(str(d))
    assert load_secret(secret)
    os.chmod(d, 0o777)
    with pytest.raises(SecretError, match=f"chmod go-w {d}"):
        load_secret(secret)


def test_the_agent_keeps_its_spec_when_an_edit_makes_it_untrusted(tmp_path: Path, caplog) -> None:
    from reconciler.agent.run import Agent

    need_root()
    spec = tmp_path / "cluster.yaml"
    write(str(spec), minimal_spec("mx1"))
    agent = Agent(str(spec), "mx1", serve=False, observe=bare_observe)
    write(str(spec), minimal_spec("mx2"))
    os.chmod(spec, 0o666)
    agent._reload()
    assert agent.spec.model.primary == "mx1"
    assert f"chmod go-w {spec}" in caplog.text


# ---- the trust check itself -----------------------------------------------------------------


def test_sticky_directory_is_a_parent_only_for_an_entry_of_root(tmp_path: Path, nobody: int) -> None:
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    mine = sticky / "mine"
    mine.write_text("x")
    trust.check_file(mine, "spec")  # like /tmp/pytest-of-root/...: the sticky bit protects root's entry
    theirs = sticky / "theirs"
    theirs.write_text("x")
    os.chown(theirs, nobody, -1)
    with pytest.raises(trust.UntrustedError, match=f"{theirs} is owned by nobody .*fix: chown root {theirs}$"):
        trust.check_file(theirs, "spec")
    with pytest.raises(trust.UntrustedError, match="anyone could create it"):
        trust.check_file(sticky / "absent", "spec")
    os.chmod(sticky, 0o777)  # not sticky: anyone may replace even root's entry
    with pytest.raises(trust.UntrustedError, match=f"fix: chmod go-w {sticky}$"):
        trust.check_file(mine, "spec")


def test_a_symbolic_link_is_checked_where_it_leads(tmp_path: Path, nobody: int) -> None:
    theirs = tmp_path / "home"
    theirs.mkdir()
    target = theirs / "cluster.yaml"
    target.write_text("x")
    os.chown(theirs, nobody, -1)
    link = tmp_path / "cluster.yaml"
    link.symlink_to(target)
    with pytest.raises(trust.UntrustedError, match=f"its directory {theirs} is owned by nobody"):
        trust.check_file(link, "spec")
    os.chown(theirs, 0, -1)
    trust.check_file(link, "spec")
    os.chmod(target, 0o646)
    with pytest.raises(trust.UntrustedError, match=f"chmod go-w {target}$"):
        trust.check_file(link, "spec")


def test_secret_mode_and_a_missing_file(tmp_path: Path) -> None:
    need_root()
    f = tmp_path / "s"
    f.write_text("x")
    os.chmod(f, 0o400)
    trust.check_file(f, "peer secret", secret=True)
    os.chmod(f, 0o640)
    with pytest.raises(trust.UntrustedError, match=r"accessible by group/others \(mode 0640\); fix: chmod 600"):
        trust.check_file(f, "peer secret", secret=True)
    trust.check_file(tmp_path / "absent", "spec")  # nothing to trust yet: the reader reports it
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) & 0o022 == 0


# ---- git ------------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> str:
    need_root()
    r = str(tmp_path / "repo")
    init_repo(r)
    commit_file(r, "cluster.yaml", minimal_spec())
    return r


def test_git_runs_no_fsmonitor_program(repo: str, tmp_path: Path) -> None:
    marker = tmp_path / "FSMONITOR-RAN"
    hook = tmp_path / "fsmonitor.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    os.chmod(hook, 0o755)
    git(repo, "config", "core.fsmonitor", str(hook))
    write(os.path.join(repo, "cluster.yaml"), minimal_spec("mx2"))  # an uncommitted edit: status must look
    r = _cli("status", "--git", repo, "--path", "cluster.yaml", "--node", "mx1", "--state-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "uncommitted edits" in r.stdout
    src = GitSource(repo, "cluster.yaml")  # the source `run --git` reads
    src.load()
    assert src.uncommitted()
    assert not marker.exists(), "git ran the repository's core.fsmonitor program"


def test_status_git_refuses_a_repository_config_others_can_write(repo: str, tmp_path: Path) -> None:
    config = os.path.join(repo, ".git", "config")
    os.chmod(config, 0o666)
    r = _cli("status", "--git", repo, "--path", "cluster.yaml", "--node", "mx1", "--state-dir", str(tmp_path))
    _one_line_refusal(r, f"git repository {config}", f"chmod go-w {config}")


def test_run_git_refuses_a_work_tree_of_nobody(repo: str, nobody: int) -> None:
    os.chown(repo, nobody, -1)
    r = _cli("run", "--git", repo, "--path", "cluster.yaml", "--node", "mx1")
    _one_line_refusal(r, f"git work tree {repo}", f"chown root {repo}")


def test_path_is_checked_by_component(repo: str, tmp_path: Path) -> None:
    commit_file(repo, "..foo", minimal_spec("mx2"))
    assert GitSource(repo, "..foo").load().model.primary == "mx2"  # a file name, not a parent
    assert GitSource(repo, os.path.join(repo, "cluster.yaml")).load().model.primary == "mx1"
    for bad in ("../x.yaml", "sub/../../x.yaml", str(tmp_path / "x.yaml"), "/etc/passwd", "."):
        with pytest.raises(SourceError, match="outside the work tree|inside the work tree"):
            GitSource(repo, bad)


def test_symbolic_links_in_the_repository_are_not_followed_out(repo: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "cluster.yaml").write_text(minimal_spec("mx2"))
    os.symlink(str(outside / "cluster.yaml"), os.path.join(repo, "link.yaml"))
    os.symlink(str(outside), os.path.join(repo, "out"))
    git(repo, "add", "link.yaml", "out")
    git(repo, "commit", "-q", "-m", "links")
    with pytest.raises(SourceError, match="link.yaml .* is a symbolic link, not a regular file"):
        GitSource(repo, "link.yaml").load()
    with pytest.raises(SourceError, match="out/cluster.yaml is not committed"):
        GitSource(repo, "out/cluster.yaml").load()
    assert str(outside) not in GitSource(repo, "out/cluster.yaml").watch()[0]
