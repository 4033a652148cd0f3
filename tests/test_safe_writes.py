"""Issue 11 (points 1 and 5): what the agent writes where another user can write, on the real
filesystem.  The "data directory" is a directory owned by an unprivileged user (postgres, or
nobody) who plants links and files at the names root writes; the victims are root-owned
files in a root-only directory.  Each victim must come out untouched (content, owner, mode).
Also: the state file is 0600 in a 0700 directory, and an ips_file that is not an address list
is named (file:line) in the error but never quoted, nor in the log nor in the state file.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.agent.run import Agent
from reconciler.agent.state import RevisionState, read_state, state_path
from reconciler.execute import pgconf
from reconciler.pgrun import OWNED_CONF, STANDBY_SIGNAL, Owner
from reconciler.spec.load import SpecError, load_spec
from tests.conftest import need_root
from tests.gitrepo import bare_observe, minimal_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "root:$6$S3cr3tSalt$NotARealHashButSecretAnyway:19000:0:99999:7:::"
PRECIOUS = "precious root-only content\n"


def _other_user() -> Owner:
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return Owner(pw.pw_uid, pw.pw_gid, pw.pw_name, pw.pw_dir)
    pytest.skip("needs a non-root user (postgres or nobody)")


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A scratch directory removed afterwards (pytest's own keeps the last runs' copies)."""
    d = tempfile.mkdtemp(prefix="reconciler-safe-writes-")
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d)


@pytest.fixture
def lab(tmp_path: Path) -> tuple[Owner, Path, Path]:
    """(the other user, a data directory it owns, a root-owned 0644 victim in a 0700 root directory)."""
    need_root()
    owner = _other_user()
    os.chmod(tmp_path, 0o755)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    os.chown(data, owner.uid, owner.gid)
    vault = tmp_path / "vault"
    vault.mkdir(mode=0o700)
    victim = vault / "victim"
    victim.write_text(PRECIOUS)
    os.chmod(victim, 0o644)
    return owner, data, victim


def _untouched(victim: Path) -> None:
    st = os.lstat(victim)
    assert victim.read_text() == PRECIOUS
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o644)


def _as(owner: Owner, fn, *args) -> None:
    """Plant as the directory's owner would (the link/file is theirs, as in a real attack)."""
    fn(*args)
    os.lchown(args[-1], owner.uid, owner.gid)


def _no_secret_under(folder: Path, text: str) -> None:
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert text not in p.read_text(errors="replace"), f"{p} holds the secret"


# ---- point 1: the data directory ----------------------------------------------------------


def test_a_link_at_the_temporary_name_is_not_followed(lab):
    owner, data, victim = lab
    conf = str(data / OWNED_CONF)
    for name in (OWNED_CONF, STANDBY_SIGNAL):  # the old fixed temporary names
        _as(owner, os.symlink, str(victim), str(data / f"{name}.reconciler-tmp"))
    assert pgconf.atomic_write(conf, "port = 5433\n", owner, 0o600)
    pgconf.write_standby_signal(str(data), owner)
    _untouched(victim)
    for name, text in ((OWNED_CONF, "port = 5433\n"), (STANDBY_SIGNAL, "")):
        st = os.lstat(data / name)
        assert stat.S_ISREG(st.st_mode) and (data / name).read_text() == text
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (owner.uid, owner.gid, 0o600)
        assert os.readlink(data / f"{name}.reconciler-tmp") == str(victim)  # left as found
    assert not pgconf.atomic_write(conf, "port = 5433\n", owner, 0o600)  # unchanged: not written


def test_a_hard_link_or_leftover_file_at_the_temporary_name_is_not_reused(lab):
    """A regular file at the temporary name (a crash's leftover, or a hard link to a root
    file) is neither truncated nor renamed into place: a fresh name is used instead."""
    owner, data, victim = lab
    os.link(victim, data / f"{OWNED_CONF}.reconciler-tmp")  # root may; with protected_hardlinks=0 anyone may
    leftover = data / f"{STANDBY_SIGNAL}.reconciler-tmp"
    leftover.write_text("leftover\n")
    os.chown(leftover, owner.uid, owner.gid)
    pgconf.atomic_write(str(data / OWNED_CONF), "port = 5433\n", owner, 0o600)
    pgconf.write_standby_signal(str(data), owner)
    _untouched(victim)
    assert leftover.read_text() == "leftover\n"
    assert (data / OWNED_CONF).read_text() == "port = 5433\n" and (data / STANDBY_SIGNAL).read_text() == ""
    os.unlink(data / f"{OWNED_CONF}.reconciler-tmp")


def test_a_link_at_postgresql_conf_is_neither_read_nor_copied(lab):
    """postgresql.conf replaced by a link to a root-only file: the old code read the file
    through the link and wrote it, plus the include line, into the data directory."""
    owner, data, victim = lab
    victim.write_text(SECRET + "\n")
    os.chmod(victim, 0o600)
    _as(owner, os.symlink, str(victim), str(data / "postgresql.conf"))
    _as(owner, os.symlink, str(victim), str(data / "postgresql.auto.conf"))
    with pytest.raises(OSError, match="symbolic link"):
        pgconf.ensure_include(str(data), owner)
    with pytest.raises(OSError, match="symbolic link"):
        pgconf.sanitize_auto_conf(str(data), owner)
    assert victim.read_text() == SECRET + "\n" and os.stat(victim).st_uid == 0
    assert os.path.islink(data / "postgresql.conf") and os.path.islink(data / "postgresql.auto.conf")
    _no_secret_under(data, "S3cr3tSalt")


def test_a_link_at_the_data_directory_itself_is_not_followed(lab, tmp_path):
    owner, data, victim = lab
    link = tmp_path / "datalink"
    os.symlink(victim.parent, link)
    with pytest.raises(OSError):
        pgconf.write_standby_signal(str(link), owner)
    assert sorted(os.listdir(victim.parent)) == ["victim"]


def test_stale_temporary_files_of_the_primitive_are_left_and_skipped(tmp_path):
    """safefile draws a new random name on a collision; what is at a taken name stays."""
    from reconciler import safefile

    with safefile.directory(str(tmp_path)) as dfd:
        fd, name = safefile.create_temp(dfd, "x", 0o600)
        os.close(fd)
        safefile.replace(dfd, "x", b"new\n")
    assert (tmp_path / "x").read_bytes() == b"new\n" and (tmp_path / name).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["x", name])


# ---- point 1: plan -out -------------------------------------------------------------------


def test_plan_out_does_not_follow_a_link_at_its_temporary_name(lab, capsys):
    from reconciler.cli.main import main

    owner, data, victim = lab
    shared = data  # a directory another user can write, like /tmp
    saved = str(shared / "plan.json")
    _as(owner, os.symlink, str(victim), f"{saved}.tmp{os.getpid()}")  # the old temporary name
    ex = os.path.join(ROOT, "specs", "examples", "fresh-install")
    spec_file = os.path.join(ROOT, "specs", "cluster.example.yaml")
    argv = ["plan", spec_file, "--node", "mx1", "--observed", os.path.join(ex, "mx1.json"),
            "--peer-observed", os.path.join(ex, "mx2.json"), "-out", saved]
    assert main(argv) == 2
    capsys.readouterr()
    _untouched(victim)
    st = os.lstat(saved)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert json.loads(Path(saved).read_text())["kind"] == "reconciler-saved-plan"


# ---- point 2: the state file ----------------------------------------------------------------


def test_state_file_is_0600_in_a_0700_directory(tmp_path):
    fresh, loose = str(tmp_path / "fresh" / "state"), tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    for d in (fresh, str(loose)):
        RevisionState("mx1", "src", d).attempt("sha256:" + "0" * 64)
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
        assert stat.S_IMODE(os.lstat(state_path(d, "mx1")).st_mode) == 0o600
        assert read_state(d, "mx1").attempted == "sha256:" + "0" * 64
        assert [n for n in os.listdir(d) if n != "state-mx1.json"] == []


def test_a_state_file_that_is_a_link_is_not_read(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"node": "mx1", "source": "src", "applied": "x"}))
    os.symlink(target, d / "state-mx1.json")
    assert read_state(str(d), "mx1") is None


# ---- point 5: no file's content in an error ---------------------------------------------------


def _secret_ips(tmp_path: Path) -> str:
    ips = tmp_path / "shadow-like"
    ips.write_text("10.9.0.1/24\n" + SECRET + "\n")
    return str(ips)


def test_an_ips_file_error_names_file_and_line_never_the_text(tmp_path):
    ips = _secret_ips(tmp_path)
    spec = minimal_spec("mx1") + f"floating_ips:\n  interface: eth0\n  ips_file: {ips}\n"
    with pytest.raises(SpecError) as e:
        load_spec(str(tmp_path / "cluster.yaml"), spec.encode())
    msg = str(e.value)
    assert msg.startswith(f"{ips}:2:1: ips_file: not a floating address entry") and "\n" not in msg
    for piece in ("S3cr3tSalt", "root:", "19000"):
        assert piece not in msg


def test_a_refused_ips_file_stays_out_of_the_log_and_the_state_file(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reconciler")
    spec_file, state = tmp_path / "cluster.yaml", str(tmp_path / "state")
    spec_file.write_text(minimal_spec("mx1"))
    agent = Agent(str(spec_file), "mx1", serve=False, state_dir=state, observe=bare_observe)
    ips = _secret_ips(tmp_path)
    spec_file.write_text(minimal_spec("mx1") + f"floating_ips:\n  interface: eth0\n  ips_file: {ips}\n")
    os.utime(spec_file, (1, 1))  # a distinct mtime: the edit is noticed whatever the clock
    agent._reload()
    st = read_state(state, "mx1")
    assert st.attempted_error and f"{ips}:2:1" in st.attempted_error
    assert f"{ips}:2:1" in caplog.text
    for text in (caplog.text, Path(state_path(state, "mx1")).read_text()):
        assert "S3cr3tSalt" not in text and "19000" not in text


def test_password_file_errors_never_quote_it(tmp_path):
    from reconciler.pgrun import PostgresError
    from reconciler.spec.models import Postgres

    pw = tmp_path / "replication.pw"
    pw.write_bytes(b"s3cr\xe9t-\xff-password\nsecond line\n")
    pw.chmod(0o600)
    cfg = Postgres(data_dir=str(tmp_path / "data"), password_file=str(pw))
    with pytest.raises(PostgresError) as e:
        pgconf.read_password(cfg)
    assert str(e.value) == f"{pw}:1: the password file is not valid UTF-8"
    pw.write_text("good-password\r\nsecond line\n")
    assert pgconf.read_password(cfg) == "good-password"
    os.unlink(pw)
    os.mkfifo(pw, 0o600)
    with pytest.raises(PostgresError, match="not a regular file"):
        pgconf.read_password(cfg)


def test_a_saved_plan_of_another_format_is_refused_without_quoting_it(tmp_path):
    from reconciler.cli.common import UserError
    from reconciler.cli.saved_plan import read_saved

    p = tmp_path / "plan.json"
    p.write_text(json.dumps({"kind": "reconciler-saved-plan", "saved_format": SECRET}))
    with pytest.raises(UserError) as e:
        read_saved(str(p))
    assert "saved_format is not 1" in str(e.value) and "S3cr3tSalt" not in str(e.value)


FIFO_PROBE = """
import sys
from reconciler import pgrun
from reconciler.observe import postgres
d = sys.argv[1]
for name, call in (("postmaster.pid", lambda: pgrun.postmaster(d)),
                   (pgrun.OWNED_CONF, lambda: postgres._read_files(d)),
                   ("pg_wal/00000002.history", lambda: postgres.read_history(d, 2))):
    try:
        call()
        print(name, "read")
    except OSError as e:
        print(name, "refused:", e.strerror)
"""


def test_fifos_planted_in_the_data_directory_do_not_hang_the_observer(tmp_path: Path) -> None:
    # The data directory's owner can put a FIFO where the observer reads postmaster.pid, the
    # owned config or a timeline history: opening one would block the agent for good.
    need_root()
    owner = _other_user()
    d = tmp_path / "pgdata"
    (d / "pg_wal").mkdir(parents=True)
    for name in ("postmaster.pid", OWNED_CONF, "pg_wal/00000002.history"):
        os.mkfifo(d / name)
    for p in (d, d / "pg_wal", *(d / n for n in ("postmaster.pid", OWNED_CONF, "pg_wal/00000002.history"))):
        os.chown(p, owner.uid, owner.gid)
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", FIFO_PROBE, str(d)], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines == ["postmaster.pid refused: not a regular file",
                     f"{OWNED_CONF} refused: not a regular file",
                     "pg_wal/00000002.history refused: not a regular file"], lines
