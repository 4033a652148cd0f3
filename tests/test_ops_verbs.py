"""The operator's verbs on real files: promote, demote and maintenance on/off change only the
`primary:` line of a commented spec (byte-exact elsewhere), refuse fenced/unknown nodes and
invalid results with the file untouched, write atomically keeping mode and symlinks, and
`--commit` commits in a real temporary git repository.  Also the pre-commit hook definition.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from reconciler.cli import ops_cmds
from reconciler.cli.main import _parser, main
from reconciler.spec.edit import EditError, locate, render_scalar, set_primary
from reconciler.spec.load import load_spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "specs" / "cluster.example.yaml"


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    shutil.copyfile(EXAMPLE, path)
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """(old, new) for each differing line; both files must have the same number of lines."""
    a, b = before.splitlines(), after.splitlines()
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b) if x != y]


PRIMARY_COMMENT = '# a node name, or "none" for maintenance (all Secondary)'


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["promote", "mx2"], "primary: mx2              "),
        (["demote"], "primary: none             "),
    ],
)
def test_verb_changes_only_the_primary_line(capsys, spec: Path, argv: list[str], line: str) -> None:
    before = spec.read_text()
    rc, out, err = cli(capsys, *argv, str(spec))
    assert rc == 0, err
    after = spec.read_text()
    assert changed_lines(before, after) == [("primary: mx1              " + PRIMARY_COMMENT, line + PRIMARY_COMMENT)]
    assert "-primary: mx1" in out and f"+{line.rstrip()}" in out  # the unified diff is shown
    assert out.startswith(f"--- a/{spec}\n+++ b/{spec}\n")
    assert load_spec(str(spec)).model.primary == line.split()[1]


def test_maintenance_on_remembers_and_off_restores_byte_for_byte(capsys, spec: Path) -> None:
    before = spec.read_bytes()
    rc, out, err = cli(capsys, "maintenance", "on", str(spec))
    assert rc == 0, err
    text = spec.read_text()
    assert load_spec(str(spec)).model.primary == "none"
    diff = [ln for ln in out.splitlines() if ln[:1] in "+-" and not ln.startswith(("---", "+++"))]
    assert diff == [
        "-primary: mx1              " + PRIMARY_COMMENT,
        "+# reconciler maintenance: previous primary mx1 (`reconciler maintenance off` restores it)",
        "+primary: none             " + PRIMARY_COMMENT,
    ]
    assert "maintenance on (was mx1)" in out
    rc, out, _ = cli(capsys, "maintenance", "on", str(spec))  # again: nothing to do
    assert rc == 0 and "nothing to change" in out and spec.read_text() == text
    rc, out, err = cli(capsys, "maintenance", "off", str(spec))
    assert rc == 0, err
    assert spec.read_bytes() == before


def test_maintenance_off_needs_a_primary_after_a_plain_demote(capsys, spec: Path) -> None:
    assert cli(capsys, "demote", str(spec))[0] == 0
    demoted = spec.read_bytes()
    rc, out, err = cli(capsys, "maintenance", "off", str(spec))
    assert rc == 1 and out == ""
    assert err.count("\n") == 1 and "give --primary NODE" in err
    assert spec.read_bytes() == demoted
    rc, out, err = cli(capsys, "maintenance", "off", "--primary", "mx2", str(spec))
    assert rc == 0, err
    assert load_spec(str(spec)).model.primary == "mx2"


def test_maintenance_off_refused_when_not_in_maintenance(capsys, spec: Path) -> None:
    before = spec.read_bytes()
    rc, _, err = cli(capsys, "maintenance", "off", "--primary", "mx2", str(spec))
    assert rc == 1 and "not in maintenance (primary is mx1)" in err
    assert spec.read_bytes() == before


def test_promote_removes_a_stale_maintenance_note(capsys, spec: Path) -> None:
    before = spec.read_text()
    assert cli(capsys, "maintenance", "on", str(spec))[0] == 0
    assert cli(capsys, "promote", "mx2", str(spec))[0] == 0
    after = spec.read_text()
    assert "reconciler maintenance" not in after
    assert changed_lines(before, after) == [
        ("primary: mx1              " + PRIMARY_COMMENT, "primary: mx2              " + PRIMARY_COMMENT)
    ]


def _fenced_spec(spec: Path) -> bytes:
    text = spec.read_text().replace("primary: mx1 ", "primary: mx2 ").replace("fenced: []  ", "fenced: [mx1]")
    spec.write_text(text)
    assert load_spec(str(spec)).model.fenced == ["mx1"]
    return spec.read_bytes()


def test_promoting_a_fenced_node_is_refused_with_the_reason(capsys, spec: Path) -> None:
    before = _fenced_spec(spec)
    mtime = spec.stat().st_mtime_ns
    rc, out, err = cli(capsys, "promote", "mx1", str(spec))
    assert rc == 1 and out == ""
    assert err.count("\n") == 1
    assert "refusing to promote mx1: it is listed in fenced:" in err and "remove it from fenced:" in err
    assert spec.read_bytes() == before and spec.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(("node", "reason"), [("mx3", "'mx3' is not a node of cluster mail"), ("none", "demote")])
def test_promoting_an_unknown_node_is_refused(capsys, spec: Path, node: str, reason: str) -> None:
    before = spec.read_bytes()
    rc, _, err = cli(capsys, "promote", node, str(spec))
    assert rc == 1 and reason in err and err.count("\n") == 1
    assert spec.read_bytes() == before


def test_an_invalid_result_is_refused_before_writing(capsys, spec: Path, monkeypatch) -> None:
    """Past the early checks (disabled here), the full validation of the result still refuses."""
    before = _fenced_spec(spec)
    monkeypatch.setattr(ops_cmds, "_check_promotable", lambda op, node: None)
    rc, out, err = cli(capsys, "promote", "mx1", str(spec))
    assert rc == 1 and out == ""
    assert re.fullmatch(r"reconciler: refusing to write .*: the result would not be valid: .*fenced\[0\]: "
                        r"the primary node cannot be fenced too\n", err)
    assert spec.read_bytes() == before
    assert [p.name for p in spec.parent.iterdir()] == ["cluster.yaml"]  # no temporary file left


def test_an_invalid_file_is_not_edited(capsys, spec: Path) -> None:
    spec.write_text(spec.read_text().replace("address: 10.0.0.2", "address: 10.0.0.999"))
    before = spec.read_bytes()
    rc, _, err = cli(capsys, "demote", str(spec))
    assert rc == 1 and "nodes.mx2.address" in err and "nothing changed" in err
    assert spec.read_bytes() == before


def test_dry_run_shows_the_diff_and_writes_nothing(capsys, spec: Path) -> None:
    before = spec.read_bytes()
    rc, out, _ = cli(capsys, "promote", "mx2", "--dry-run", str(spec))
    assert rc == 0 and "+primary: mx2" in out and "dry run: not written" in out
    assert spec.read_bytes() == before


def test_promoting_the_primary_changes_nothing(capsys, spec: Path) -> None:
    before = spec.read_bytes()
    rc, out, _ = cli(capsys, "promote", "mx1", str(spec))
    assert rc == 0 and "already the primary" in out and spec.read_bytes() == before


def test_write_keeps_mode_and_symlink(capsys, spec: Path, tmp_path: Path) -> None:
    os.chmod(spec, 0o640)
    link = tmp_path / "link.yaml"
    link.symlink_to(spec.name)
    assert cli(capsys, "promote", "mx2", str(link))[0] == 0
    assert link.is_symlink() and load_spec(str(spec)).model.primary == "mx2"
    assert stat.S_IMODE(spec.stat().st_mode) == 0o640


ODD = (
    "%YAML 1.1\r\n---\r\n# odd but valid formatting\r\ncluster: mail\r\n"
    "nodes: {mx1: {address: 10.0.0.1}, 'mx2': {address: 10.0.0.2}}\r\n"
    "primary:    'mx1'   # quoted, extra spaces\r\nfenced:\r\n- mx2\r\n"
    "floating_ips:\r\n    interface: eth0\r\n    addresses:\r\n    -   192.0.2.10/24   # odd\r\n"
    "drbd:\r\n  - {name: r0, device: /dev/drbd0, options: [noatime,  nodiratime]}\r\n...\r\n"
)


def test_odd_formatting_survives_byte_for_byte(capsys, tmp_path: Path) -> None:
    """4-space blocks, unindented sequences, flow mappings, quotes, CRLF, `...`: all kept
    (a round-trip dump, ruamel.yaml's included, would re-indent and re-space them)."""
    path = tmp_path / "odd.yaml"
    path.write_bytes(ODD.encode())
    assert cli(capsys, "maintenance", "on", str(path))[0] == 0  # fenced mx2: maintenance is allowed
    expected = ODD.replace(
        "primary:    'mx1'   #",
        "# reconciler maintenance: previous primary mx1 (`reconciler maintenance off` restores it)\r\n"
        "primary:    'none'  #",
    )
    assert path.read_bytes() == expected.encode()
    assert cli(capsys, "maintenance", "off", str(path))[0] == 0
    assert path.read_bytes() == ODD.encode()


def test_set_primary_units() -> None:
    text = "cluster: c\nnodes: {a: {address: 10.0.0.1}}\nprimary: a # x\n"
    assert set_primary(text, "none").endswith("primary: none # x\n")  # at least one space kept
    assert locate('\ufeffprimary: "a"\n').style == '"'
    assert render_scalar("true", None) == '"true"' and render_scalar("1.5", None) == '"1.5"'
    assert render_scalar("mx-2", None) == "mx-2" and render_scalar("mx2", "'") == "'mx2'"
    with pytest.raises(EditError, match="block scalar"):
        locate("primary: |\n  a\n")
    with pytest.raises(EditError, match="exactly one"):
        locate("cluster: c\n")


def git(repo: Path, *argv: str) -> str:
    r = subprocess.run(["git", "-C", str(repo), *argv], capture_output=True, text=True, timeout=60, check=True)
    return r.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.fail("git is needed for --commit tests")
    repo = tmp_path / "config"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "ops@example.org")
    git(repo, "config", "user.name", "Ops")
    git(repo, "config", "commit.gpgsign", "false")
    shutil.copyfile(EXAMPLE, repo / "cluster.yaml")
    git(repo, "add", "cluster.yaml")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def test_commit_in_a_real_git_repository(capsys, repo: Path) -> None:
    (repo / "notes.txt").write_text("staged, not ours\n")
    git(repo, "add", "notes.txt")
    rc, out, err = cli(capsys, "promote", "mx2", "--commit", str(repo / "cluster.yaml"))
    assert rc == 0, err
    assert git(repo, "log", "-1", "--format=%s").strip() == "reconciler: promote mx2 (was mx1)"
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["cluster.yaml"]
    assert git(repo, "status", "--porcelain").splitlines() == ["A  notes.txt"]  # left staged, uncommitted
    assert "committed " in out
    rc, _, err = cli(capsys, "maintenance", "on", "--commit", str(repo / "cluster.yaml"))
    assert rc == 0, err
    assert git(repo, "log", "-1", "--format=%s").strip() == "reconciler: maintenance on (was mx2)"
    assert git(repo, "status", "--porcelain", "--", "cluster.yaml") == ""


def test_commit_refused_with_uncommitted_changes_or_outside_git(capsys, repo: Path, tmp_path: Path) -> None:
    path = repo / "cluster.yaml"
    path.write_text(path.read_text() + "# a local edit\n")
    before = path.read_bytes()
    rc, _, err = cli(capsys, "promote", "mx2", "--commit", str(path))
    assert rc == 1 and "uncommitted changes" in err and path.read_bytes() == before
    outside = tmp_path / "loose.yaml"
    shutil.copyfile(EXAMPLE, outside)
    rc, _, err = cli(capsys, "promote", "mx2", "--commit", str(outside))
    assert rc == 1 and "not in a git repository" in err
    assert outside.read_bytes() == EXAMPLE.read_bytes()


def test_pre_commit_hook_definition() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "reconciler-validate")
    assert hook["entry"] == "reconciler validate" and hook["language"] == "python"
    files = re.compile(hook["files"])
    assert files.search("clusters/mail.yaml") and files.search("cluster.yml")
    assert not files.search("cluster.json") and not files.search("yaml.txt")
    args = _parser().parse_args([*hook["entry"].split()[1:], "clusters/mail.yaml"])
    assert args.cmd == "validate"
