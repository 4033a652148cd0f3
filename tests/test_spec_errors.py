"""Bad desired-state files: each must give ONE `FILE:LINE:COL: key.path: reason` line at the
right line.  The table below is the contract of the loader's error reporting; the CLI tests
check that `reconciler validate` prints exactly that line (no traceback) and exits 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.spec.load import MAX_SPEC_BYTES, SpecError, load_spec

ROOT = Path(__file__).resolve().parent.parent

# Lines 1-7; cases append from line 8 on.
BASE = """\
cluster: mail
nodes:
  mx1:
    address: 10.0.0.1
  mx2:
    address: 10.0.0.2
primary: mx1
"""

AUTO_PG = BASE + "postgres:\n  data_dir: /d\n  synchronous: true\n"  # failover from line 11
AUTO_F = "failover:\n  mode: automatic\n  witness:\n    name: wit1\n    address: 10.0.0.3\n"

FI = BASE + "floating_ips:\n  interface: eth0\n  addresses:\n"  # entries start at line 11


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    line: int
    key: str
    reason: str
    ips: str | None = None  # content of an ips_file; "{ips}" in text is replaced by its path
    in_ips: bool = False  # the error is reported in the ips_file


CASES = [
    Case("yaml-syntax", BASE + "fenced: [mx2\n", 9, "yaml", "expected ',' or ']'"),
    Case("yaml-syntax-colon", BASE + "cluster2: a: b\n", 8, "yaml", "mapping values are not allowed"),
    Case("tab-indentation", "cluster: mail\nnodes:\n\tmx1: {address: 10.0.0.1}\n", 3, "yaml", "tab character"),
    Case("empty-file", "", 1, "(file)", "empty file"),
    Case("only-comments", "# nothing here\n\n", 1, "(file)", "empty file"),
    Case("top-level-list", "- cluster\n- mail\n", 1, "(file)", "top level must be a mapping"),
    Case("top-level-scalar", "mail\n", 1, "(file)", "top level must be a mapping"),
    Case("two-documents", BASE + "---\ncluster: other\n", 8, "yaml", "single document"),
    Case("not-utf8", BASE + "# caf\xe9\n", 8, "(file)", "not valid UTF-8"),
    Case("control-char", BASE + "fenced: [\x07]\n", 8, "yaml", "not allowed"),
    Case("port-string", BASE + "postgres:\n  data_dir: /var/lib/pg\n  port: abc\n", 10, "postgres.port",
         "expected an integer, got a string"),
    Case("port-quoted-number", BASE + "postgres:\n  data_dir: /d\n  port: '5432'\n", 10, "postgres.port",
         "expected an integer, got a string"),
    Case("port-boolean", BASE + "postgres:\n  data_dir: /d\n  port: yes\n", 10, "postgres.port",
         "got a boolean (true)"),
    Case("port-out-of-range", BASE + "postgres:\n  data_dir: /d\n  port: 70000\n", 10, "postgres.port",
         "must be at most 65535"),
    Case("port-zero", BASE + "agent:\n  peer_port: 0\n", 9, "agent.peer_port", "must be at least 1"),
    Case("negative-lag", BASE + "postgres:\n  data_dir: /d\n  max_promotion_lag_bytes: -1\n", 10,
         "postgres.max_promotion_lag_bytes", "must be at least 0"),
    Case("primary-list", BASE.replace("primary: mx1", "primary: [mx1]"), 7, "primary",
         "expected a string or 'none', got a list"),
    Case("primary-empty", BASE.replace("primary: mx1", "primary:"), 7, "primary", "got an empty value"),
    Case("cluster-mapping", BASE.replace("cluster: mail", "cluster: {name: mail}"), 1, "cluster",
         "expected a string, got a mapping"),
    Case("unknown-top-key", BASE + "extra_setting: blue\n", 8, "extra_setting", "unknown key (allowed: cluster, nodes"),
    Case("unknown-nested-key", BASE + "postgres:\n  data_dir: /d\n  prot: 5432\n", 10, "postgres.prot",
         "did you mean 'port'?"),
    Case("unknown-key-in-entry", FI + "    - {address: 192.0.2.1/24, iface: eth1}\n", 11,
         "floating_ips.addresses[0].iface", "did you mean 'interface'?"),
    Case("entry-wrong-type", FI + "    - [192.0.2.1/24]\n", 11, "floating_ips.addresses[0]",
         "expected a string or a mapping, got a list"),
    Case("missing-top-key", BASE.replace("primary: mx1\n", ""), 1, "primary", "required key is missing"),
    Case("missing-nested-key", BASE + "postgres:\n  port: 5432\n", 8, "postgres.data_dir", "required key is missing"),
    Case("missing-in-list-item", BASE + "drbd:\n  - name: r0\n", 9, "drbd[0].device", "required key is missing"),
    Case("nodes-empty", BASE.replace("nodes:\n  mx1:\n    address: 10.0.0.1\n  mx2:\n    address: 10.0.0.2\n",
                                     "nodes: {}\n").replace("primary: mx1", "primary: none"),
         2, "nodes", "must not be empty"),
    Case("three-nodes", BASE.replace("primary:", "  mx3:\n    address: 10.0.0.3\nprimary:"), 7, "nodes",
         "at most 2 entries allowed, got 3"),
    Case("duplicate-node-name", BASE.replace("  mx2:", "  mx1:"), 5, "nodes.mx1",
         "duplicate key (first at line 3)"),
    Case("duplicate-top-key", BASE + "cluster: mail2\n", 8, "cluster", "duplicate key (first at line 1)"),
    Case("node-address-not-ip", BASE.replace("10.0.0.2", "mx2.example.com"), 6, "nodes.mx2.address",
         "not an IP address (e.g. 192.0.2.1"),
    Case("nodes-same-address", BASE.replace("10.0.0.2", "10.0.0.1"), 6, "nodes.mx2.address",
         "duplicate address (the same as nodes.mx1.address)"),
    Case("node-name-invalid", BASE.replace("  mx2:", "  'mx 2':"), 5, "nodes.<key>", "not a valid name (letters"),
    Case("non-string-key", BASE + "yes: 1\n", 8, "(file)", "quote it"),
    Case("merge-key", BASE + "agent:\n  <<: {peer_port: 7}\n", 9, "agent", "merge keys"),
    Case("python-tag", BASE + "fenced: !!python/object/apply:os.system [true]\n", 8, "fenced",
         "unsupported YAML tag"),
    Case("primary-unknown-node", BASE.replace("primary: mx1", "primary: mx3"), 7, "primary",
         "not one of the nodes (mx1, mx2) nor 'none'"),
    Case("fenced-unknown-node", BASE + "fenced:\n  - mx2\n  - mx9\n", 10, "fenced[1]", "not one of the nodes (mx1, mx2)"),
    Case("primary-also-fenced", BASE + "fenced: [mx1]\n", 8, "fenced[0]", "the primary node cannot be fenced"),
    Case("fenced-twice", BASE.replace("primary: mx1", "primary: none") + "fenced:\n  - mx2\n  - mx2\n", 10,
         "fenced[1]", "duplicate node (the same as fenced[0])"),
    Case("ifname-too-long", BASE + "floating_ips:\n  interface: eth0123456789abc\n", 9, "floating_ips.interface",
         "at most 15 characters"),
    Case("ifname-space", BASE + "floating_ips:\n  interface: 'eth 0'\n", 9, "floating_ips.interface",
         "not a valid interface name (1 to 15"),
    Case("ifname-slash", FI + "    - {address: 192.0.2.1/24, interface: eth/0}\n", 11,
         "floating_ips.addresses[0].interface", "not a valid interface name (1 to 15"),
    Case("ifname-dotdot", BASE + "floating_ips:\n  interface: '..'\n", 9, "floating_ips.interface",
         "not a valid interface name"),
    Case("relative-data-dir", BASE + "postgres:\n  data_dir: var/lib/pg\n", 9, "postgres.data_dir",
         "must be an absolute path (starting with /)"),
    Case("relative-ips-file", BASE + "floating_ips:\n  interface: eth0\n  ips_file: etc/ips\n", 10,
         "floating_ips.ips_file", "must be an absolute path"),
    Case("relative-device", BASE + "drbd:\n  - name: r0\n    device: dev/drbd0\n", 10, "drbd[0].device",
         "must be an absolute path"),
    Case("drbd-same-mount", BASE + "drbd:\n  - {name: r0, device: /dev/drbd0, mount: /m}\n"
         "  - {name: r1, device: /dev/drbd1, mount: /m}\n", 10, "drbd[1].mount", "duplicate mount (the same as drbd[0].mount)"),
    Case("services-duplicate", BASE + "services:\n  - name: greenarrow\n  - name: greenarrow\n", 10,
         "services[1].name", "duplicate name (the same as services[0].name)"),
    Case("service-command-relative", BASE + "services:\n  - name: x\n    commands:\n      start: [bin/x, start]\n"
         "      stop: [/bin/x, stop]\n      status: [/bin/x, status]\n", 11, "services[0].commands.start",
         "the program must be an absolute path"),
    Case("service-command-empty", BASE + "services:\n  - name: x\n    commands:\n      start: []\n"
         "      stop: [/bin/x]\n      status: [/bin/x]\n", 11, "services[0].commands.start", "must not be empty"),
    Case("replication-source-garbage", BASE + "postgres:\n  data_dir: /d\n  replication_source: 'a b c'\n", 10,
         "postgres.replication_source", "neither 'primary', a node name nor host:port"),
    Case("duplicate-ip", FI + "    - 192.0.2.5/24\n    - 192.0.2.5/24\n", 12, "floating_ips.addresses[1]",
         "repeats the address of floating_ips.addresses[0], line 11"),
    Case("same-ip-other-prefix-and-iface", FI + "    - 192.0.2.5/24\n    - {address: 192.0.2.5/25, interface: eth1}\n",
         12, "floating_ips.addresses[1]", "repeats the address of floating_ips.addresses[0]"),
    Case("overlapping-ranges", FI + "    - 192.0.2.10-192.0.2.20/24\n    - 192.0.2.30/24\n"
         "    - 192.0.2.15-192.0.2.40/24\n", 13, "floating_ips.addresses[2]",
         "overlaps floating_ips.addresses[0], line 11"),
    Case("cidr-inside-range", FI + "    - 192.0.2.1-192.0.2.9/24\n    - 192.0.2.5/24\n", 12,
         "floating_ips.addresses[1]", "overlaps floating_ips.addresses[0]"),
    Case("range-over-cap", FI + "    - 10.1.0.1-10.2.0.1/8\n", 11, "floating_ips.addresses[0]",
         "range has more than 65,536 addresses"),
    Case("range-ipv6-huge", FI + "    - 2001:db8::1-2001:db8::1:0:0/64\n", 11, "floating_ips.addresses[0]",
         "more than 65,536"),
    Case("range-reversed", FI + "    - 192.0.2.100-192.0.2.2/24\n", 11, "floating_ips.addresses[0]",
         "range start is after its end"),
    Case("range-two-networks", FI + "    - 192.0.2.10-192.0.3.10/24\n", 11, "floating_ips.addresses[0]",
         "range ends are in different /24 networks"),
    Case("malformed-cidr", FI + "    - 192.0.2.300/24\n", 11, "floating_ips.addresses[0]",
         "not an IP address"),
    Case("missing-prefix", FI + "    - 192.0.2.7\n", 11, "floating_ips.addresses[0]", "missing /prefix"),
    Case("prefix-33", FI + "    - 10.0.0.1/33\n", 11, "floating_ips.addresses[0]", "prefix too long for IPv4 (at most /32)"),
    Case("ipv6-prefix-129", FI + "    - 2001:db8::10/129\n", 11, "floating_ips.addresses[0]",
         "prefix too long for IPv6 (at most /128)"),
    Case("network-address", FI + "    - 192.0.2.0/24\n", 11, "floating_ips.addresses[0]",
         "is the network address of its /24 network"),
    Case("range-with-broadcast", FI + "    - 192.0.2.250-192.0.2.255/24\n", 11, "floating_ips.addresses[0]",
         "range includes the broadcast address of its /24"),
    Case("entry-without-interface", BASE + "floating_ips:\n  addresses:\n    - 192.0.2.5/24\n", 10,
         "floating_ips.addresses[0]", "no interface"),
    Case("ips-file-missing", BASE + "floating_ips:\n  interface: eth0\n  ips_file: /nonexistent/reconciler/ips\n",
         10, "floating_ips.ips_file", "cannot read /nonexistent/reconciler/ips"),
    Case("ips-file-bad-line", BASE + "floating_ips:\n  interface: eth0\n  ips_file: {ips}\n", 3, "ips_file",
         "not a floating address entry", ips="# primary IPs\n10.9.0.1/24\n10.9.0.999/24\n", in_ips=True),
    Case("ips-file-two-per-line", BASE + "floating_ips:\n  interface: eth0\n  ips_file: {ips}\n", 2, "ips_file",
         "not a floating address entry", ips="\n10.9.0.1/24 10.9.0.2/24\n", in_ips=True),
    Case("ips-file-overlaps-spec", FI + "    - 10.9.0.2/24\n  ips_file: {ips}\n", 2, "ips_file",
         "overlaps floating_ips.addresses[0], ", ips="#\n10.9.0.1-10.9.0.5/24\n",
         in_ips=True),
    Case("ips-file-without-interface", BASE + "floating_ips:\n  ips_file: {ips}\n", 9, "floating_ips.ips_file",
         "need floating_ips.interface", ips="10.9.0.1/24\n"),
    # failover: automatic (lines 8-9 postgres, then failover from line 12)
    Case("failover-no-witness", AUTO_PG + "failover:\n  mode: automatic\n", 12, "failover.mode", "needs a witness"),
    Case("failover-not-synchronous", BASE + "postgres:\n  data_dir: /d\n  synchronous: false\n" + AUTO_F, 10,
         "postgres.synchronous", "needs postgres.synchronous: true"),
    Case("failover-no-postgres", BASE + AUTO_F, 9, "failover.mode", "needs postgres.synchronous"),
    Case("failover-witness-is-a-node", AUTO_PG + AUTO_F.replace("wit1", "mx2"), 14, "failover.witness.name",
         "must not be one of the nodes"),
    Case("failover-witness-address", AUTO_PG + AUTO_F.replace("10.0.0.3", "10.0.0.2"), 15, "failover.witness.address",
         "another machine"),
    Case("failover-demote-too-early", AUTO_PG + AUTO_F + "  renew_interval_s: 5\n  demote_after_s: 6\n", 17,
         "failover.demote_after_s", "at least renew_interval_s + etcd.request_timeout_s (7 s)"),
    Case("failover-watchdog-too-short", AUTO_PG + AUTO_F + "  watchdog: {timeout_s: 10}\n", 16,
         "failover.watchdog.timeout_s", "in the middle of its demotion"),
    Case("failover-ttl-too-short", AUTO_PG + AUTO_F + "  lease_ttl_s: 16\n", 16, "failover.lease_ttl_s",
         "at least watchdog.timeout_s + 2 s (17 s)"),
    Case("failover-ttl-watchdog-off", AUTO_PG + AUTO_F + "  watchdog: 'off'\n  lease_ttl_s: 14\n", 17,
         "failover.lease_ttl_s", "demote_after_s + demotion_budget_s + 2 s (15 s)"),
    Case("synchronous-in-manual-mode", AUTO_PG, 10, "postgres.synchronous", "managed only in failover.mode: automatic"),
    Case("failover-mode-unknown", BASE + "failover:\n  mode: auto\n", 9, "failover.mode", "'manual' or 'automatic'"),
    Case("failover-https-without-ca", AUTO_PG + AUTO_F + "  etcd:\n    endpoints: ['https://10.0.0.1:2379']\n", 17,
         "failover.etcd.ca_file", "https endpoints need a ca_file"),
    Case("failover-password-without-user", AUTO_PG + AUTO_F + "  etcd:\n    password_file: /etc/reconciler/etcd.pw\n",
         17, "failover.etcd.username", "go together"),
    Case("failover-endpoint-not-url", BASE + "failover:\n  etcd:\n    endpoints: [10.0.0.1]\n", 10,
         "failover.etcd.endpoints[0]", "must match"),
    Case("nested-too-deep", BASE + "fenced: " + "[" * 100 + "]" * 100 + "\n", 8, "yaml", "nested deeper than"),
]


def _load_case(case: Case, tmp_path: Path) -> tuple[SpecError, str]:
    spec_file = tmp_path / "cluster.yaml"
    ips_file = tmp_path / "primary_ips"
    text = case.text
    if case.ips is not None:
        ips_file.write_text(case.ips)
        text = text.replace("{ips}", str(ips_file))
    spec_file.write_bytes(text.encode("utf-8", "surrogateescape") if "\xe9" not in text else text.encode("latin-1"))
    with pytest.raises(SpecError) as info:
        load_spec(str(spec_file))
    return info.value, str(ips_file if case.in_ips else spec_file)


def test_table_is_large_and_distinct() -> None:
    assert len(CASES) >= 35
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({(c.text, c.ips) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    err, file = _load_case(case, tmp_path)
    line = str(err)
    assert "\n" not in line
    assert line.startswith(f"{file}:{case.line}:"), line
    assert err.file == file and err.line == case.line
    assert err.col >= 1
    assert f": {case.key}" in line, line
    assert case.reason in err.reason, line
    assert line == f"{err.file}:{err.line}:{err.col}: {err.key}: {err.reason}"


def test_error_column_points_at_value(tmp_path: Path) -> None:
    err, _ = _load_case(Case("c", BASE + "postgres:\n  data_dir: /d\n  port: abc\n", 10, "", ""), tmp_path)
    assert (err.line, err.col) == (10, 9)
    err, _ = _load_case(Case("c", BASE + "colour: blue\n", 8, "", ""), tmp_path)
    assert (err.line, err.col) == (8, 1)


def test_alias_bomb_refused_fast(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text(BASE + "\n".join(lines) + "\n")
    start = time.monotonic()
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    # A hang guard, not a speed figure: expanded, the bomb is 9**10 strings (never finishes).
    assert time.monotonic() - start < 30.0
    assert info.value.line == 8
    assert "anchors and aliases" in info.value.reason


def test_alias_alone_refused(tmp_path: Path) -> None:
    path = tmp_path / "alias.yaml"
    path.write_text(BASE + "fenced: *x\n")
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    assert info.value.line == 8 and "aliases" in info.value.reason


def test_file_over_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(BASE.encode() + b"#" * MAX_SPEC_BYTES)
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    assert str(info.value).startswith(f"{path}:1:1: (file): ")
    assert "larger than" in info.value.reason


def test_missing_spec_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    assert str(info.value).startswith(f"{path}:1:1: ")
    assert "cannot read" in info.value.reason


def test_directory_as_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(str(tmp_path))
    assert "cannot read" in info.value.reason or "not a regular file" in info.value.reason


def test_too_many_addresses_in_total(tmp_path: Path) -> None:
    ranges = "".join(f"    - 10.{i}.0.1-10.{i}.255.254/16\n" for i in range(4))
    path = tmp_path / "many.yaml"
    path.write_text(FI + ranges)
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    assert info.value.line == 14 and "more than 200,000" in info.value.reason


# --- the CLI ---------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )


@pytest.mark.parametrize("case_id", ["port-string", "duplicate-node-name", "overlapping-ranges", "yaml-syntax",
                                     "empty-file", "tab-indentation"])
def test_cli_validate_bad(case_id: str, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == case_id)
    path = tmp_path / "bad.yaml"
    path.write_text(case.text)
    r = _cli("validate", str(path))
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"{path}:{case.line}:")
    assert case.reason in lines[0]
    assert "Traceback" not in r.stderr


def test_cli_validate_missing_file(tmp_path: Path) -> None:
    r = _cli("validate", str(tmp_path / "absent.yaml"))
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1 and ":1:1:" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_validate_unexpected_exception_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from reconciler.cli import spec_cmds
    from reconciler.spec import load

    def boom(path: str) -> None:
        raise KeyError("unexpected\nbug")

    monkeypatch.setattr(load, "load_spec", boom)
    rc = spec_cmds.cmd_validate(argparse.Namespace(files=["x.yaml"]))
    out = capsys.readouterr()
    assert rc == 1
    assert out.err.count("\n") == 1 and out.err.startswith("x.yaml:1:1: ")
    assert "Traceback" not in out.err


def test_cli_validate_example() -> None:
    r = _cli("validate", "specs/cluster.example.yaml")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("specs/cluster.example.yaml: valid (2 nodes, ")
    assert r.stderr == ""


def test_cli_schema_is_json() -> None:
    r = _cli("schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert schema["type"] == "object"
    assert {"cluster", "nodes", "primary"} <= set(schema["required"])
