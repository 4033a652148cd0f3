"""Bad specs and bad snapshots through the real CLI (`main(argv)`, in process): each gives exit 1
and ONE line `FILE:LINE:COL: key.path: reason` that never quotes the file.

Every bad value that could be quoted carries the marker `Zq9` (and every spec ends with a
`# Zq9` comment): no message may contain it.  Addresses are checked by their own text
(`hidden`).  The tables are the contract of issue 11 (points 4 and 6): addresses that can
only be mistakes, control characters and option-like names, snapshot format/BOM/size, and
no echo of file contents.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.address import span
from reconciler.cli.main import main
from reconciler.model import MAX_SNAPSHOT_BYTES, AddressObs, InterfaceObs, NodeObservation

MARK = "Zq9"
LINE_RE = re.compile(r"^(?:reconciler: )?(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<key>\S+): (?P<reason>.+)$")

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
FI = BASE + "floating_ips:\n  interface: eth0\n  addresses:\n"  # entries start at line 11
IPS = BASE + "floating_ips:\n  interface: eth0\n  ips_file: {ips}\n"  # errors in the ips_file
PG = BASE + "postgres:\n"  # postgres keys from line 9
SVC = BASE + "services:\n"  # service items from line 9
DRBD = BASE + "drbd:\n"  # resource items from line 9


@dataclass(frozen=True)
class Bad:
    id: str
    text: str | bytes
    line: int
    key: str
    reason: str
    hidden: tuple[str, ...] = ()  # besides MARK: texts from the file no message may contain
    ips: str | None = None  # an ips_file's content; the error is reported in it


def node2(address: str) -> str:
    return BASE.replace("10.0.0.2", address)


def svc_cmd(start: str) -> str:
    return SVC + f"  - name: x\n    commands:\n      start: {start}\n      stop: [/bin/x]\n      status: [/bin/x]\n"


BAD_SPECS = [
    # -- node addresses: the peer server binds them ------------------------------------------
    Bad("node-unspecified-v4", node2("0.0.0.0"), 6, "nodes.mx2.address", "unspecified address"),
    Bad("node-unspecified-v6", node2("'::'"), 6, "nodes.mx2.address", "listen on every interface"),
    Bad("node-multicast-v4", node2("224.0.0.18"), 6, "nodes.mx2.address", "multicast", ("224.0.0.18",)),
    Bad("node-multicast-v6", node2("'ff02::1'"), 6, "nodes.mx2.address", "multicast", ("ff02::1",)),
    Bad("node-limited-broadcast", node2("255.255.255.255"), 6, "nodes.mx2.address", "limited broadcast"),
    Bad("node-v4-mapped", node2("'::ffff:10.0.0.2'"), 6, "nodes.mx2.address", "IPv4-mapped", ("::ffff:10.0.0.2",)),
    Bad("node-link-local-v6", node2("'fe80::2'"), 6, "nodes.mx2.address", "link-local", ("fe80::2",)),
    Bad("node-zone-index", node2("'fe80::2%eth0'"), 6, "nodes.mx2.address", "link-local", ("%eth0",)),
    Bad("node-hostname", node2("Zq9.example.com"), 6, "nodes.mx2.address", "not an IP address"),
    Bad("node-integer", node2("167772162"), 6, "nodes.mx2.address", "expected a string, got an integer",
        ("167772162",)),
    # -- floating addresses, inline -------------------------------------------------------
    Bad("fl-prefix0-v4", FI + "    - 10.0.0.5/0\n", 11, "floating_ips.addresses[0]", "prefix /0", ("10.0.0.5",)),
    Bad("fl-prefix0-v6", FI + "    - '::/0'\n", 11, "floating_ips.addresses[0]", "prefix /0"),
    Bad("fl-prefix0-v6-host", FI + "    - '2001:db8::7/0'\n", 11, "floating_ips.addresses[0]", "prefix /0",
        ("2001:db8::7",)),
    Bad("fl-loopback-v4", FI + "    - 127.0.0.5/8\n", 11, "floating_ips.addresses[0]", "loopback", ("127.0.0.5",)),
    Bad("fl-loopback-v6", FI + "    - '::1/128'\n", 11, "floating_ips.addresses[0]", "loopback address (::1)"),
    Bad("fl-multicast-v4", FI + "    - 239.1.2.3/24\n", 11, "floating_ips.addresses[0]", "multicast", ("239.1.2.3",)),
    Bad("fl-multicast-v6", FI + "    - 'ff05::1:3/64'\n", 11, "floating_ips.addresses[0]", "multicast", ("ff05::1:3",)),
    Bad("fl-limited-broadcast", FI + "    - 255.255.255.255/32\n", 11, "floating_ips.addresses[0]",
        "limited broadcast"),
    Bad("fl-unspecified-v4", FI + "    - 0.0.0.0/32\n", 11, "floating_ips.addresses[0]", "unspecified"),
    Bad("fl-unspecified-v6", FI + "    - '::/128'\n", 11, "floating_ips.addresses[0]", "unspecified"),
    Bad("fl-this-network", FI + "    - 0.1.2.3/32\n", 11, "floating_ips.addresses[0]", "this network", ("0.1.2.3",)),
    Bad("fl-v4-mapped", FI + "    - '::ffff:192.0.2.5/128'\n", 11, "floating_ips.addresses[0]", "IPv4-mapped",
        ("192.0.2.5",)),
    Bad("fl-range-into-multicast", FI + "    - 223.255.255.250-224.0.0.5/32\n", 11, "floating_ips.addresses[0]",
        "range includes a multicast", ("223.255.255.250",)),
    Bad("fl-range-loopback", FI + "    - 127.0.0.1-127.0.0.9/24\n", 11, "floating_ips.addresses[0]",
        "range includes a loopback"),
    Bad("fl-broadcast-slash30", FI + "    - 192.0.2.3/30\n", 11, "floating_ips.addresses[0]",
        "broadcast address of its /30", ("192.0.2.3",)),
    Bad("fl-network-slash16", FI + "    - 172.16.0.0/16\n", 11, "floating_ips.addresses[0]",
        "network address of its /16", ("172.16.0.0",)),
    Bad("fl-is-node-address", FI + "    - 10.0.0.1/24\n", 11, "floating_ips.addresses[0]",
        "is the address of node mx1 (nodes.mx1.address)", ("10.0.0.1/24",)),
    Bad("fl-range-covers-node", FI + "    - 10.0.0.2-10.0.0.9/24\n", 11, "floating_ips.addresses[0]",
        "includes the address of node mx2", ("10.0.0.9",)),
    Bad("fl-is-node-address-v6", FI.replace("10.0.0.2", "2001:db8::2") + "    - 2001:db8::2/64\n", 11,
        "floating_ips.addresses[0]", "is the address of node mx2"),
    Bad("fl-entry-mapping-loopback", FI + "    - {address: 127.1.1.1/8, interface: lo}\n", 11,
        "floating_ips.addresses[0]", "loopback", ("127.1.1.1",)),
    Bad("fl-garbage", FI + "    - Zq9secret/24\n", 11, "floating_ips.addresses[0]", "not an IP address"),
    Bad("fl-bad-prefix-text", FI + "    - 192.0.2.9/Zq9\n", 11, "floating_ips.addresses[0]", "bad prefix length"),
    # -- floating addresses, ips_file (the error is in the ips_file, at its line) ----------------
    Bad("ips-loopback", IPS, 2, "ips_file", "loopback", ("127.0.0.2",), ips="10.9.0.1/24\n127.0.0.2/8\n"),
    Bad("ips-multicast-v6", IPS, 1, "ips_file", "multicast", ("ff02::5",), ips="ff02::5/64\n"),
    Bad("ips-node-address", IPS, 3, "ips_file", "is the address of node mx2", ("10.0.0.2/24",),
        ips="# ours\n10.9.0.1/24\n10.0.0.2/24\n"),
    Bad("ips-prefix0", IPS, 1, "ips_file", "prefix /0", ("10.3.3.3",), ips="10.3.3.3/0\n"),
    Bad("ips-v4-mapped", IPS, 2, "ips_file", "IPv4-mapped", ("::ffff:10.9.0.9",), ips="\n::ffff:10.9.0.9/128\n"),
    # -- control characters in paths and names (conninfo, config files, argv) --------------------
    Bad("data-dir-newline", PG + '  data_dir: "/var/lib/Zq9\\nhost=evil"\n', 9, "postgres.data_dir",
        "control character"),
    Bad("data-dir-vtab", PG + '  data_dir: "/var/lib/Zq9\\v"\n', 9, "postgres.data_dir", "control character"),
    Bad("data-dir-cr", PG + '  data_dir: "/var/lib/Zq9\\r"\n', 9, "postgres.data_dir", "control character"),
    Bad("data-dir-formfeed", PG + '  data_dir: "/var/lib/Zq9\\f"\n', 9, "postgres.data_dir", "control character"),
    Bad("data-dir-nul", PG + '  data_dir: "/var/lib/Zq9\\0x"\n', 9, "postgres.data_dir", "control character"),
    Bad("socket-dir-del", PG + '  data_dir: /d\n  socket_dir: "/run/Zq9\\x7f"\n', 10, "postgres.socket_dir",
        "control character"),
    Bad("bin-dir-escape", PG + '  data_dir: /d\n  bin_dir: "/usr/Zq9\\e[0m"\n', 10, "postgres.bin_dir",
        "control character"),
    Bad("password-file-tab", PG + '  data_dir: /d\n  password_file: "/etc/Zq9\\tx"\n', 10, "postgres.password_file",
        "control character"),
    Bad("replication-user-newline", PG + '  data_dir: /d\n  replication_user: "rep\\nZq9"\n', 10,
        "postgres.replication_user", "not a valid user name"),
    Bad("replication-user-dash", PG + "  data_dir: /d\n  replication_user: -Zq9\n", 10, "postgres.replication_user",
        "not a valid user name"),
    Bad("replication-source-newline", PG + '  data_dir: /d\n  replication_source: "db.Zq9:5432\\n"\n', 10,
        "postgres.replication_source", "neither 'primary'"),
    Bad("replication-source-dash", PG + "  data_dir: /d\n  replication_source: '-oZq9:5432'\n", 10,
        "postgres.replication_source", "not starting with '-'"),
    Bad("peer-secret-file-newline", BASE + 'agent:\n  peer_secret_file: "/etc/Zq9\\n"\n', 9,
        "agent.peer_secret_file", "control character"),
    Bad("ips-file-path-cr", BASE + 'floating_ips:\n  interface: eth0\n  ips_file: "/etc/Zq9\\r"\n', 10,
        "floating_ips.ips_file", "control character"),
    # -- names passed to external commands: never an option ------------------------------------
    Bad("service-dashdash-now", SVC + "  - name: --now\n", 9, "services[0].name", "not a valid systemd unit name"),
    Bad("service-root-mount", SVC + "  - name: -.mount\n", 9, "services[0].name", "not starting with '-'"),
    Bad("service-template", SVC + "  - name: getty@.service\n", 9, "services[0].name", "template unit"),
    Bad("service-bare-template", SVC + "  - name: Zq9@\n", 9, "services[0].name", "template unit"),
    Bad("service-newline", SVC + '  - name: "Zq9\\nx.service"\n', 9, "services[0].name", "control character"),
    Bad("service-program-control", svc_cmd('["/bin/Zq9\\a"]'), 11, "services[0].commands.start",
        "program path contains a control character"),
    Bad("service-argument-nul", svc_cmd('[/bin/x, "Zq9\\0"]'), 11, "services[0].commands.start",
        "argument contains a control character"),
    Bad("service-argument-escape", svc_cmd('[/bin/x, "Zq9\\e"]'), 11, "services[0].commands.start",
        "argument contains a control character"),
    Bad("service-program-relative", svc_cmd("[Zq9, start]"), 11, "services[0].commands.start",
        "program must be an absolute path"),
    Bad("ifname-leading-dash", BASE + "floating_ips:\n  interface: -Zq9\n", 9, "floating_ips.interface",
        "not starting with '-'"),
    Bad("ifname-entry-leading-dash", FI + "    - {address: 192.0.2.1/24, interface: --all}\n", 11,
        "floating_ips.addresses[0].interface", "not a valid interface name"),
    Bad("drbd-name-dash", DRBD + "  - {name: -Zq9, device: /dev/drbd0}\n", 9, "drbd[0].name", "not a valid name"),
    Bad("drbd-device-newline", DRBD + '  - {name: r0, device: "/dev/Zq9\\n"}\n', 9, "drbd[0].device",
        "control character"),
    Bad("drbd-mount-tab", DRBD + '  - {name: r0, device: /dev/drbd0, mount: "/srv/Zq9\\tx"}\n', 9,
        "drbd[0].mount", "control character"),
    Bad("drbd-option-dash", DRBD + "  - {name: r0, device: /dev/drbd0, options: [-Zq9]}\n", 9, "drbd[0].options[0]",
        "not a valid mount option"),
    Bad("drbd-fstype-dash", DRBD + "  - {name: r0, device: /dev/drbd0, fstype: -tZq9}\n", 9, "drbd[0].fstype",
        "not a valid file system type"),
    # -- nothing from the file is quoted ---------------------------------------------------
    Bad("shadow-like", "root:$6$Zq9salt$Zq9hash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n", 1, "cluster",
        "required key is missing", ("$6$", "daemon")),
    Bad("passwd-like", "root:x:0:0:root:/root:/bin/bash\nZq9:x:1:1::/:/bin/sh\n", 1, "(file)",
        "top level must be a mapping", ("/bin/bash", "root")),
    Bad("top-level-scalar", "Zq9-a-password-on-one-line\n", 1, "(file)", "top level must be a mapping"),
    Bad("yaml-bad-char", "cluster: mail\nnodes: %Zq9\n", 2, "yaml", "found character that cannot start any token",
        ("%",)),
    Bad("yaml-unknown-escape", 'cluster: "ab\\qZq9"\n', 1, "yaml", "unknown escape character", ("'q'",)),
    Bad("yaml-unclosed-quote", 'cluster: "Zq9 and more\n', 3, "yaml", "end of stream"),
    Bad("yaml-unclosed-flow", BASE + "fenced: [Zq9\n", 10, "yaml", "expected ',' or ']'"),
    Bad("custom-tag-scalar", "cluster: !Zq9secret mail\n", 1, "cluster", "cannot read this value", ("!Zq9",)),
    Bad("custom-tag-mapping", "cluster: mail\nnodes: !Zq9secret {}\n", 2, "nodes", "unsupported YAML tag"),
    Bad("anchor", BASE + "fenced: &Zq9 [mx2]\n", 8, "yaml", "anchors and aliases"),
    Bad("billion-laughs", "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n", 1, "yaml", "anchors and aliases"),
    Bad("unknown-key-value-hidden", BASE + "extra: Zq9secret\n", 8, "extra", "unknown key"),
    Bad("unknown-key-not-a-name", BASE + "'Zq9 secret': 1\n", 8, "<key>", "unknown key"),
    Bad("unknown-key-with-colon", BASE + "'Zq9:x:0:0': 1\n", 8, "<key>", "unknown key"),
    Bad("node-name-not-a-name", BASE.replace("  mx2:", "  'Zq9 two':"), 5, "nodes.<key>", "not a valid name"),
    Bad("duplicate-key-hidden", BASE + "cluster: Zq9\n", 8, "cluster", "duplicate key (first at line 1)"),
    Bad("integer-key", BASE + "1234567: Zq9\n", 8, "(file)", "read as an integer", ("1234567",)),
    Bad("cluster-integer", BASE.replace("cluster: mail", "cluster: 98765432101"), 1, "cluster",
        "expected a string, got an integer", ("98765432101",)),
    Bad("cluster-date", BASE.replace("cluster: mail", "cluster: 2001-02-03"), 1, "cluster", "got a date",
        ("2001",)),
    Bad("cluster-binary", BASE.replace("cluster: mail", "cluster: !!binary Zq9secretAA=="), 1, "cluster",
        "got binary data"),
    Bad("port-string", PG + "  data_dir: /d\n  port: Zq9\n", 10, "postgres.port", "expected an integer, got a string"),
    Bad("port-float", PG + "  data_dir: /d\n  port: 5432.75\n", 10, "postgres.port", "got a number", ("5432.75",)),
    Bad("port-too-big", PG + "  data_dir: /d\n  port: 987654\n", 10, "postgres.port", "at most 65535", ("987654",)),
    Bad("port-huge-digits", PG + "  data_dir: /d\n  port: " + "7" * 5000 + "\n", 10, "postgres.port",
        "more than 4300 digits", ("77777",)),
    Bad("primary-unknown", BASE.replace("primary: mx1", "primary: Zq9"), 7, "primary", "not one of the nodes"),
    Bad("fenced-unknown", BASE + "fenced: [Zq9]\n", 8, "fenced[0]", "not one of the nodes"),
    Bad("drbd-duplicate-device", DRBD + "  - {name: r0, device: /dev/Zq9}\n  - {name: r1, device: /dev/Zq9}\n", 10,
        "drbd[1].device", "duplicate device (the same as drbd[0].device)"),
    Bad("overlap-hidden", FI + "    - 192.0.2.10-192.0.2.20/24\n    - 192.0.2.15/24\n", 12,
        "floating_ips.addresses[1]", "overlaps floating_ips.addresses[0], line 11", ("192.0.2.1",)),
    Bad("not-utf8", BASE.encode() + b"# \xff" + MARK.encode() + b"\n", 8, "(file)", "not valid UTF-8"),
]


def _write_spec(case: Bad, tmp_path: Path) -> tuple[Path, Path]:
    """(the spec, the file the error must name)."""
    spec, ips = tmp_path / "cluster.yaml", tmp_path / "primary_ips"
    if isinstance(case.text, bytes):
        spec.write_bytes(case.text)
        return spec, spec
    text = case.text
    if case.ips is not None:
        ips.write_text(case.ips + f"# {MARK}\n")
        text = text.replace("{ips}", str(ips))
    spec.write_text(text + f"# {MARK}\n")
    return spec, ips if case.ips is not None else spec


def _one_line(rc: int, out: str, err: str) -> re.Match[str]:
    assert rc == 1, (rc, out, err)
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    m = LINE_RE.match(lines[0])
    assert m, lines[0]
    return m


def test_tables_are_large_and_distinct() -> None:
    assert len(BAD_SPECS) >= 60
    assert len({c.id for c in BAD_SPECS}) == len(BAD_SPECS)
    assert len({(c.text, c.ips) for c in BAD_SPECS}) == len(BAD_SPECS)
    assert len(BAD_SNAPSHOTS) >= 20
    assert len({c.id for c in BAD_SNAPSHOTS}) == len(BAD_SNAPSHOTS)
    assert len({c.data for c in BAD_SNAPSHOTS}) == len(BAD_SNAPSHOTS)


@pytest.mark.parametrize("case", BAD_SPECS, ids=[c.id for c in BAD_SPECS])
def test_bad_spec(case: Bad, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec, err_file = _write_spec(case, tmp_path)
    rc = main(["validate", str(spec)])
    out, err = capsys.readouterr()
    m = _one_line(rc, out, err)
    assert m["file"] == str(err_file)
    assert int(m["line"]) == case.line, err
    assert m["key"] == case.key, err
    assert case.reason in m["reason"], err
    for hidden in (MARK, *case.hidden):
        assert hidden not in m["reason"] and hidden not in m["key"], f"{hidden!r} quoted: {err}"


# -- snapshots: plan --observed FILE --------------------------------------------------------

GOOD_SNAPSHOT = {"format": 1, "node": "mx1"}


def snap(**fields: object) -> bytes:
    return json.dumps({**GOOD_SNAPSHOT, **fields}).encode()


def iface(*addresses: dict[str, object]) -> dict[str, object]:
    return {"eth0": {"addresses": list(addresses)}}


@dataclass(frozen=True)
class BadSnap:
    id: str
    data: bytes
    key: str
    reason: str
    line: int = 1
    hidden: tuple[str, ...] = ()


BAD_SNAPSHOTS = [
    BadSnap("format-99", snap(format=99), "format", "unsupported snapshot format", hidden=("99",)),
    BadSnap("format-0", snap(format=0), "format", "unsupported snapshot format"),
    BadSnap("format-huge", b'{"node": "mx1", "format": ' + b"9" * 500 + b"}", "format", "unsupported snapshot format",
            hidden=("9999",)),
    BadSnap("format-string", snap(format="Zq9"), "format", "expected an integer"),
    BadSnap("format-nan", b'{"node": "mx1", "format": NaN}', "format", "finite number"),
    BadSnap("format-inf", b'{"node": "mx1", "format": 1e999}', "format", "finite number"),
    BadSnap("shadow-file", b"root:$6$Zq9salt$Zq9hash:19000:0:99999:7:::\n", "(file)", "invalid JSON",
            hidden=("root", "$6$")),
    BadSnap("yaml-not-json", b"node: Zq9\nformat: 1\n", "(file)", "invalid JSON"),
    BadSnap("empty", b"", "(file)", "invalid JSON"),
    BadSnap("top-level-list", b'["Zq9", 1]', "(file)", "expected an object"),
    BadSnap("top-level-string", b'"Zq9 secret"', "(file)", "expected an object"),
    BadSnap("not-utf8", b'{"node": "mx1\xff' + MARK.encode() + b'"}', "(file)", "not valid UTF-8"),
    BadSnap("utf16", '{"node": "Zq9"}'.encode("utf-16"), "(file)", "not valid UTF-8"),
    BadSnap("node-missing", b'{\n  "format": 1\n}', "node", "required key is missing"),
    BadSnap("unknown-key-name", snap(extra="Zq9"), "extra", "unknown key"),
    BadSnap("unknown-key-not-a-name", snap(**{"Zq9 secret": 1}), "<key>", "unknown key"),
    BadSnap("address-garbage", snap(interfaces=iface({"address": "Zq9secret", "owned": True})),
            "interfaces.eth0.addresses[0].address", "not an address with a prefix length"),
    BadSnap("address-no-prefix", snap(interfaces=iface({"address": "10.1.0.5", "owned": True})),
            "interfaces.eth0.addresses[0].address", "not an address with a prefix length", hidden=("10.1.0.5",)),
    BadSnap("address-zone", snap(interfaces=iface({"address": "fe80::1%Zq9/64", "owned": True})),
            "interfaces.eth0.addresses[0].address", "zone index"),
    BadSnap("owned-not-bool", snap(interfaces=iface({"address": "10.1.0.5/24", "owned": "Zq9"})),
            "interfaces.eth0.addresses[0].owned", "expected true or false"),
    BadSnap("lsn-garbage", snap(postgres={"running": True, "current_lsn": "Zq9/secret"}), "postgres.current_lsn",
            "not an LSN"),
    BadSnap("drbd-role", snap(drbd={"r0": {"configured": True, "role": "Zq9"}}), "drbd.r0.role",
            "expected 'Primary', 'Secondary' or 'Unknown'"),
    BadSnap("interfaces-list", snap(interfaces=["Zq9"]), "interfaces", "expected an object"),
    BadSnap("errors-not-list", snap(errors="Zq9"), "errors", "expected a list"),
    BadSnap("deep-nesting", b'{"node": "mx1", "errors": ' + b"[" * 5000 + b"]" * 5000 + b"}", "(file)",
            "recursion limit"),
    BadSnap("raw-control-char", b'{"node": "Zq9\x01"}', "(file)", "control character"),
    BadSnap("trailing-garbage", b'{"node": "mx1"} Zq9', "(file)", "trailing characters"),
    BadSnap("second-line-error", b'{\n  "node": "mx1",\n  "format": "Zq9"\n}', "format", "expected an integer",
            line=3),
]

SPEC_FOR_PLAN = BASE


@pytest.fixture(scope="module")
def plan_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "cluster.yaml"
    path.write_text(SPEC_FOR_PLAN)
    return path


def _plan(spec: Path, snapshot: Path) -> list[str]:
    return ["plan", str(spec), "--node", "mx1", "--observed", str(snapshot)]


@pytest.mark.parametrize("case", BAD_SNAPSHOTS, ids=[c.id for c in BAD_SNAPSHOTS])
def test_bad_snapshot(case: BadSnap, plan_spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mx1.json"
    path.write_bytes(case.data)
    rc = main(_plan(plan_spec, path))
    out, err = capsys.readouterr()
    m = _one_line(rc, out, err)
    assert m["file"] == str(path)
    assert int(m["line"]) == case.line, err
    assert m["key"] == case.key, err
    assert case.reason in m["reason"], err
    for hidden in (MARK, *case.hidden):
        assert hidden not in m["reason"] and hidden not in m["key"], f"{hidden!r} quoted: {err}"


def test_snapshot_with_bom_is_read(plan_spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mx1.json"
    path.write_bytes(b"\xef\xbb\xbf" + snap())
    assert main(_plan(plan_spec, path)) in (0, 2)
    assert capsys.readouterr().err == ""


def test_snapshot_of_10k_addresses_fits_the_cap_8_times() -> None:
    first = (10 << 24) + (1 << 16) + 1
    obs = NodeObservation(node="mx1", interfaces={"eth0": InterfaceObs(addresses=tuple(
        AddressObs(address=a, owned=True, secondary=True) for a in span(4, first, first + 9_999, 16)))})
    text = obs.to_json()
    assert 8 * len(text) <= MAX_SNAPSHOT_BYTES
    assert NodeObservation.from_json(text) == obs


def test_oversized_snapshot_is_refused_quickly(plan_spec: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big.json"
    with open(path, "wb") as f:  # a valid JSON prefix: the refusal is by size, before parsing
        f.write(b'{"node": "mx1", "errors": [' + b'"x", ' * ((MAX_SNAPSHOT_BYTES + 1024) // 5) + b'"x"]}')
    start = time.monotonic()
    rc = main(_plan(plan_spec, path))
    elapsed = time.monotonic() - start
    m = _one_line(rc, *capsys.readouterr())
    assert m["key"] == "(file)" and "larger than the 10 MiB limit" in m["reason"]
    assert elapsed < 2.0


@pytest.mark.parametrize("kind", ["fifo", "directory", "missing"])
def test_snapshot_not_a_regular_file(kind: str, plan_spec: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "snap"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    def hung(signum: int, frame: object) -> None:
        raise TimeoutError("plan --observed FIFO blocked")  # before the O_NONBLOCK open, it did

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        start = time.monotonic()
        rc = main(_plan(plan_spec, path))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    m = _one_line(rc, *capsys.readouterr())
    assert m["file"] == str(path) and m["key"] == "(file)"
    want = {"fifo": "not a regular file", "directory": "not a regular file", "missing": "No such file"}[kind]
    assert want in m["reason"]
    assert time.monotonic() - start < 2.0
