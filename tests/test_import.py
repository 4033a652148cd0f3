"""`reconciler import` and its pure parts: a generated /etc/hvmail_primary_ips of a few hundred
lines and a realistic drbd.conf (with includes) become a spec that validates, whose ranges are
collapsed and expand to exactly the input addresses; the drbd.conf reader on its own; and
one-line errors (exit 1) for missing files and malformed lines.
"""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest
import yaml

from reconciler.cli.main import main
from reconciler.spec.addresses import MAX_RANGE, Block, parse_entry
from reconciler.spec.drbdconf import DrbdConfError, load, parse, resources, tokenize
from reconciler.spec.legacy import IpsItem, LegacyError, collapse, format_block, parse_ips
from reconciler.spec.load import load_spec


def v4(prefix: int, first: str, n: int) -> list[str]:
    start = int(ipaddress.IPv4Address(first))
    return [f"{ipaddress.IPv4Address(start + i)}/{prefix}" for i in range(n)]


def make_ips_file() -> tuple[str, set[str]]:
    """(text, canonical addresses).  Expected after collapsing: 10 entries (see comments)."""
    rnd = random.Random(7)
    run_a = v4(24, "192.0.2.10", 200)  # 1 entry, though shuffled
    rnd.shuffle(run_a)
    lines = ["# GreenArrow primary IPs", "# maintained by hand", ""]
    for i, a in enumerate(run_a):
        lines += [a] + ([""] if i % 37 == 0 else [])
    lines += ["192.0.2.220/24", "192.0.2.222/24", "", "  192.0.2.224/24  "]  # 3 singletons
    lines += ["192.0.2.10/24"]  # an exact repeat: dropped with a warning
    lines += ["# second subnet /25"]
    lines += v4(25, "198.51.100.1", 60)  # 1 entry
    lines += v4(24, "198.51.100.61", 5)  # adjacent, other prefix: 1 entry
    lines += v4(25, "198.51.100.129", 22)  # 1 entry (other /25 network)
    lines += ["#198.51.100.99/25", "198.51.100.100/25   # bounce domain"]  # 1 entry, kept apart
    lines += ["", "# IPv6"] + [f"2001:db8:25::{i:x}/64" for i in range(0x10, 0x20)]  # 1 entry
    lines += ["2001:db8:25::100/64"]  # 1 entry
    text = "\n".join(lines) + "\n"
    addrs = {str(ipaddress.ip_interface(a.split("#")[0].strip())) for a in lines if a.strip()[:1].isalnum()}
    return text, addrs


DRBD_CONF = """\
# /etc/drbd.conf
include "drbd.d/global_common.conf";
include "drbd.d/*.res";
include "drbd.d/missing-*.conf";   # matches nothing: ignored, as drbdadm does
"""

GLOBAL_COMMON = """\
global { usage-count no; }
common {
    handlers { split-brain "/usr/lib/drbd/notify-split-brain.sh root; # not a comment"; }
    net { protocol C; }
}
skip { resource old { on x { address 10.9.9.9:7789; } } }
"""

R0_RES = """\
resource r0 {
    net { cram-hmac-alg sha1; shared-secret "s3cr{e}t#;"; }
    on mx1.example.com {
        device    /dev/drbd0;
        disk      /dev/sdb1;
        address   10.0.0.1:7789;   # replication link
        meta-disk internal;
    }
    on mx2.example.com {
        device    /dev/drbd0 minor 0;
        disk      "/dev/disk/by-id/scsi-0QEMU_disk 2";
        address   ipv4 10.0.0.2:7789;
        meta-disk internal;
    }
}
"""


@pytest.fixture
def legacy(tmp_path: Path) -> tuple[Path, Path, set[str]]:
    text, addrs = make_ips_file()
    ips = tmp_path / "hvmail_primary_ips"
    ips.write_text(text)
    assert len(text.splitlines()) > 300
    (tmp_path / "drbd.d").mkdir()
    (tmp_path / "drbd.d" / "global_common.conf").write_text(GLOBAL_COMMON)
    (tmp_path / "drbd.d" / "r0.res").write_text(R0_RES)
    conf = tmp_path / "drbd.conf"
    conf.write_text(DRBD_CONF)
    return ips, conf, addrs


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_import_writes_a_valid_collapsed_spec(capsys, legacy, tmp_path: Path) -> None:
    ips, conf, addrs = legacy
    out_path = tmp_path / "cluster.yaml"
    rc, out, err = cli(capsys, "import", "--primary-ips", str(ips), "--drbd-conf", str(conf), "--primary", "mx1",
                       "--mount", "r0=/var/hvmail", "--interface", "ens18", "-o", str(out_path))
    assert rc == 0, err
    assert "repeats line" in err and "192.0.2.10/24" in err  # the duplicate, as a warning
    text = out_path.read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=cluster.schema.json"
    loaded = load_spec(str(out_path))
    assert set(loaded.addresses) == {"ens18"}
    assert {a.text for a in loaded.addresses["ens18"]} == addrs and len(loaded.addresses["ens18"]) == len(addrs)
    doc = yaml.safe_load(text)
    assert len(doc["floating_ips"]["addresses"]) == 10
    assert "192.0.2.10-192.0.2.209/24" in doc["floating_ips"]["addresses"]
    assert "    # second subnet /25" in text and "    #198.51.100.99/25" in text
    assert any(ln.startswith("    - 198.51.100.100/25 ") and ln.endswith("# bounce domain") for ln in text.splitlines())
    spec = loaded.model
    assert {n: spec.nodes[n].address for n in spec.nodes} == {"mx1": "10.0.0.1", "mx2": "10.0.0.2"}
    assert spec.primary == "mx1"
    assert [(r.name, r.device, r.mount, r.fstype) for r in spec.drbd] == [("r0", "/dev/drbd0", "/var/hvmail", "ext4")]


def test_import_defaults_to_stdout_and_placeholders(capsys, legacy, tmp_path: Path) -> None:
    ips, conf, _ = legacy
    rc, out, err = cli(capsys, "import", "--primary-ips", str(ips), "--drbd-conf", str(conf),
                       "--node-names", "alpha,beta=10.0.0.22", "--cluster", "mx")
    assert rc == 0, err
    assert "no mount point" in err and "primary: none" in err
    assert "    # mount: /var/hvmail" in out
    path = tmp_path / "stdout.yaml"
    path.write_text(out)
    spec = load_spec(str(path)).model
    assert spec.cluster == "mx" and spec.primary == "none" and spec.drbd[0].mount is None
    assert {n: spec.nodes[n].address for n in spec.nodes} == {"alpha": "10.0.0.1", "beta": "10.0.0.22"}


def test_import_without_drbd_conf_needs_node_addresses(capsys, legacy, tmp_path: Path) -> None:
    ips, _, _ = legacy
    rc, _, err = cli(capsys, "import", "--primary-ips", str(ips), "--node-names", "mx1,mx2")
    assert rc == 1 and "--node-names mx1=10.0.0.1" in err and err.count("\n") == 1
    rc, out, err = cli(capsys, "import", "--primary-ips", str(ips), "--node-names", "mx1=10.0.0.1,mx2=10.0.0.2")
    assert rc == 0, err
    assert "drbd: []" in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("192.0.2.1/24\n# fine\n\n192.0.2.x/24\n", r"hvmail_primary_ips:4: not an IP address"),
        ("192.0.2.1/24\n192.0.2.7\n", r"hvmail_primary_ips:2: missing /prefix"),
        ("192.0.2.1-192.0.2.9/24\n192.0.2.5/25\n", r"hvmail_primary_ips:2: 192.0.2.5/25 overlaps 192.0.2.1-192.0.2.9/24"),
    ],
)
def test_malformed_ips_lines_name_their_line(capsys, tmp_path: Path, content: str, expected: str) -> None:
    ips = tmp_path / "hvmail_primary_ips"
    ips.write_text(content)
    rc, out, err = cli(capsys, "import", "--primary-ips", str(ips), "--node-names", "mx1=10.0.0.1")
    assert rc == 1 and out == "" and err.count("\n") == 1
    assert expected in err


def test_bad_inputs_give_one_line_errors(capsys, legacy, tmp_path: Path) -> None:
    ips, conf, _ = legacy
    cases = [
        (["--primary-ips", str(tmp_path / "nope")], "cannot read"),
        (["--primary-ips", str(ips), "--drbd-conf", str(tmp_path / "nope.conf")], "cannot read"),
        (["--primary-ips", str(ips), "--drbd-conf", str(conf), "--mount", "r9=/x"], "r9, not a resource"),
        (["--primary-ips", str(ips), "--drbd-conf", str(conf), "--primary", "mx3"], "--primary mx3: not one of"),
        (["--primary-ips", str(ips), "--drbd-conf", str(conf), "--node-names", "a,b,c"], "3 names for the 2 hosts"),
        (["--primary-ips", str(ips), "--drbd-conf", str(conf), "--interface", "x" * 20], "interface name"),
        (["--primary-ips", str(ips), "--drbd-conf", str(conf), "-o", str(ips)], "exists; not overwritten"),
    ]
    before = ips.read_bytes()
    for argv, reason in cases:
        rc, out, err = cli(capsys, "import", *argv)
        assert rc == 1 and out == "", argv
        assert err.startswith("reconciler: ") and err.count("\n") == 1 and reason in err, (argv, err)
    assert ips.read_bytes() == before
    (tmp_path / "drbd.d" / "r0.res").write_text(R0_RES.replace("address   10.0.0.1:7789;", "address 10.0.0.1:7789"))
    rc, _, err = cli(capsys, "import", "--primary-ips", str(ips), "--drbd-conf", str(conf))
    assert rc == 1 and err.count("\n") == 1  # the next line joins the unterminated statement:
    assert "r0.res:6: cannot read 'address 10.0.0.1:7789 meta-disk internal' (expected IP:PORT)" in err


def test_tokenize_comments_quotes_and_lines() -> None:
    toks = tokenize('a "b c;#" # d ; }\nx{y;}', "f")
    assert [(t.text, t.line, t.quoted) for t in toks] == [
        ("a", 1, False), ("b c;#", 1, True), ("x", 2, False), ("{", 2, False), ("y", 2, False),
        (";", 2, False), ("}", 2, False),
    ]
    assert tokenize(r'"a\"b"', "f")[0].text == 'a"b'
    with pytest.raises(DrbdConfError, match=r"^f:2: unterminated quoted string$"):
        tokenize('a;\n"open\n', "f")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("resource r0 {\n on a {\n", "f:2: this '{' is never closed"),
        ("global { }\n}\n", "f:2: '}' without a matching '{'"),
        ("resource r0 { device /dev/drbd0 }", "f:1: missing ';' after 'device /dev/drbd0'"),
        ("{ a; }", "f:1: '{' without a section name before it"),
    ],
)
def test_parse_errors_name_the_line(text: str, error: str) -> None:
    with pytest.raises(DrbdConfError) as e:
        parse(text, "f")
    assert str(e.value) == error


def test_resources_volumes_minor_and_ipv6() -> None:
    text = """
    resource "data" {
        device minor 3;
        on alice { volume 0 { disk /dev/sda7; meta-disk internal; } address ipv6 [fd00::1]:7789; }
        on bob { address ipv6 [fd00::2]:7789; };
    }
    resource r1 { on alice { volume 0 { device minor 1; } address 10.1.1.31:7790; }
                  on bob { volume 0 { device minor 1; } address 10.1.1.32:7790; } }
    """
    res = resources(parse(text, "f"))
    assert [(r.name, r.device, [(h.name, h.address) for h in r.hosts]) for r in res] == [
        ("data", "/dev/drbd3", [("alice", "fd00::1"), ("bob", "fd00::2")]),
        ("r1", "/dev/drbd1", [("alice", "10.1.1.31"), ("bob", "10.1.1.32")]),
    ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("on a { device /dev/drbd0; address 10.0.0.1:1; } on b { device /dev/drbd1; address 10.0.0.2:1; }",
         "different devices"),
        ("on a { device /dev/drbd0; address host.example:1; }", "expected IP:PORT"),
        ("on a { device /dev/drbd0; }", "needs exactly one address"),
        ("volume 0 { device minor 0; } volume 1 { device minor 1; } on a { address 10.0.0.1:1; }",
         "several volumes"),
        ("floating 10.0.0.1:7789 { device /dev/drbd0; }", "'floating' sections are not supported"),
    ],
)
def test_unsupported_or_inconsistent_resources(body: str, error: str) -> None:
    with pytest.raises(DrbdConfError, match=error):
        resources(parse(f"resource r0 {{ {body} }}", "f"))


def test_include_loop_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text('include "b.conf";\n')
    (tmp_path / "b.conf").write_text('include "a.conf";\n')
    with pytest.raises(DrbdConfError, match="nested deeper"):
        load(str(tmp_path / "a.conf"))


def _items(*entries: str) -> list[IpsItem]:
    return [IpsItem(parse_entry(e), e, i + 1) for i, e in enumerate(entries)]


def test_collapse_respects_prefix_network_comments_and_size() -> None:
    got = [format_block(i.block) for i in collapse(_items(
        "192.0.2.3/24", "192.0.2.1/24", "192.0.2.2/24",  # unsorted run
        "2001:db8::ff/120", "2001:db8::100/120",  # adjacent, two /120 networks
        "192.0.2.4/25",  # adjacent, another prefix
    ))]
    assert got == ["192.0.2.1-192.0.2.3/24", "192.0.2.4/25", "2001:db8::ff/120", "2001:db8::100/120"]
    commented = [IpsItem(parse_entry("192.0.2.5/24"), "x", 9, "vip")] + _items("192.0.2.6/24")
    assert len(collapse(commented)) == 2
    big = [IpsItem(Block(6, n, n, 64), "x", 1) for n in range(MAX_RANGE + 1)]
    assert [b.block.count for b in collapse(big)] == [MAX_RANGE, 1]


def test_parse_ips_sections_and_warnings() -> None:
    sections, warnings = parse_ips("#a\n192.0.2.1/24\n# b\n#c\n192.0.2.2/24 # two\n192.0.2.1/24\n", "f")
    assert [(s.comments, [(i.text, i.line, i.comment) for i in s.items]) for s in sections] == [
        (["a"], [("192.0.2.1/24", 2, None)]),
        ([" b", "c"], [("192.0.2.2/24", 5, "two")]),
    ]
    assert warnings == ["f:6: 192.0.2.1/24 repeats line 2; dropped"]
    with pytest.raises(LegacyError, match=r"^f:1: "):
        parse_ips("bogus\n", "f")
