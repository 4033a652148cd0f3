"""Shell completion: the bash script names every subcommand, passes `bash -n`, and completes
subcommands, options, choices and files when its function is run in a real bash; nested
subcommands of another parser complete too; the zsh script passes `zsh -n` where zsh exists.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.cli.completion import bash_script, tree, zsh_script
from reconciler.cli.main import _parser, main

RUN = 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _reconciler; ' \
      'printf "%s\\n" "${COMPREPLY[@]}"'


def bash_available() -> str:
    bash = shutil.which("bash")
    if bash is None:
        pytest.fail("bash is needed")  # Debian always has it
    return bash


@pytest.fixture
def script(tmp_path: Path, capsys) -> Path:
    assert main(["completion", "bash"]) == 0
    path = tmp_path / "reconciler.bash"
    path.write_text(capsys.readouterr().out)
    return path


def complete(script: Path, words: list[str], cwd: Path) -> list[str]:
    r = subprocess.run([bash_available(), "-c", RUN, "complete-test", str(script), *words],
                       capture_output=True, text=True, timeout=30, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return sorted(ln for ln in r.stdout.splitlines() if ln)


def test_bash_script_names_every_subcommand_and_parses(script: Path) -> None:
    text = script.read_text()
    commands = list(tree(_parser()).subcommands)
    assert {"validate", "plan", "promote", "demote", "maintenance", "import", "completion"} <= set(commands)
    assert f'"") echo "{" ".join(commands)}" ;;' in text
    assert text.rstrip().endswith("complete -F _reconciler reconciler")
    r = subprocess.run([bash_available(), "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_bash_completes_commands_options_choices_and_files(script: Path, tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text("")
    (tmp_path / "clusters").mkdir()
    cases = [
        (["reconciler", "pro"], ["promote"]),
        (["reconciler", "ma"], ["maintenance"]),
        (["reconciler", "maintenance", ""], ["off", "on"]),
        (["reconciler", "maintenance", "on", "clu"], ["cluster.yaml", "clusters"]),
        (["reconciler", "completion", ""], ["bash", "zsh"]),
        (["reconciler", "plan", "--peer"], ["--peer-observed"]),
        (["reconciler", "apply", "--log-format", ""], ["json", "text"]),
        (["reconciler", "plan", "--node", "mx1", "clu"], ["cluster.yaml", "clusters"]),
        (["reconciler", "promote", "mx"], []),  # NODE: no file names offered
        (["reconciler", "import", "--dr"], ["--drbd-conf"]),
        (["reconciler", "demote", "--c"], ["--commit"]),
    ]
    for words, expected in cases:
        assert complete(script, words, tmp_path) == expected, words


def nested_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reconciler")
    sub = p.add_subparsers(dest="cmd")
    peer = sub.add_parser("peer", help="peer things")
    psub = peer.add_subparsers(dest="sub")
    k = psub.add_parser("keygen", help="make a key")
    k.add_argument("--bits", type=int, choices=(128, 256))
    k.add_argument("out_file")
    return p


def test_nested_subcommands_complete(tmp_path: Path) -> None:
    path = tmp_path / "nested.bash"
    path.write_text(bash_script(nested_parser()))
    assert complete(path, ["reconciler", "peer", ""], tmp_path) == ["keygen"]
    assert complete(path, ["reconciler", "peer", "keygen", "--bits", ""], tmp_path) == ["128", "256"]
    assert complete(path, ["reconciler", "peer", "keygen", "--"], tmp_path) == ["--bits", "--help"]
    assert "_reconciler__peer__keygen()" in zsh_script(nested_parser())


def test_zsh_script_parses() -> None:
    text = zsh_script(_parser())
    assert text.startswith("#compdef reconciler\n")
    assert "'maintenance:on: `primary: none`" in text and "':state:(on off)'" in text
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed (syntax check only)")
    r = subprocess.run([zsh, "-n", "-c", text], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
