"""Good-path tests of the desired-state loader: the example validates, addresses expand to
canonical sorted strings per interface, the ips_file is read and hashed, the committed JSON
Schema is current, and every cluster spec under specs/ names the schema for editors.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.address import Address, parse
from reconciler.spec import LoadedSpec
from reconciler.spec.addresses import Block, expand, find_overlap, ips_file_entries, parse_entry
from reconciler.spec.load import SpecError, load_spec
from reconciler.spec.schema import schema_json

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
EXAMPLE = SPECS / "cluster.example.yaml"

HEAD = """\
cluster: mail
nodes:
  mx1: {address: 10.0.0.1}
  mx2: {address: 10.0.0.2}
primary: mx1
"""


def _texts(addrs: tuple[Address, ...]) -> tuple[str, ...]:
    return tuple(a.text for a in addrs)


def _by_iface(addresses: dict[str, tuple[Address, ...]]) -> dict[str, tuple[str, ...]]:
    return {name: _texts(addrs) for name, addrs in addresses.items()}


def _write(tmp_path: Path, text: str, name: str = "cluster.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_example_validates() -> None:
    loaded = load_spec(str(EXAMPLE))
    spec = loaded.model
    assert spec.cluster == "mail" and spec.primary == "mx1"
    assert {n: v.address for n, v in spec.nodes.items()} == {"mx1": "10.0.0.1", "mx2": "10.0.0.2"}
    assert [r.device for r in spec.drbd] == ["/dev/drbd0"] and spec.drbd[0].mount == "/var/hvmail"
    assert spec.postgres is not None and spec.postgres.data_dir == "/var/lib/postgresql/15/main"
    assert [s.name for s in spec.services] == ["greenarrow"]
    assert set(loaded.addresses) == {"eth0", "eth1"}
    assert _texts(loaded.addresses["eth1"]) == ("198.51.100.7/25",)
    eth0 = _texts(loaded.addresses["eth0"])
    assert len(eth0) == 1 + 40 + 1
    assert eth0[0] == "192.0.2.10/24" and eth0[1] == "192.0.2.20/24" and eth0[-2] == "192.0.2.59/24"
    assert eth0[-1] == "2001:db8:25::10/64"
    assert loaded.digest == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    assert loaded.path == str(EXAMPLE)


def test_example_shows_ips_file_commented_out() -> None:
    text = EXAMPLE.read_text()
    assert re.search(r"^\s*#\s*ips_file: /etc/hvmail_primary_ips", text, re.M)
    assert not re.search(r"^\s*ips_file:", text, re.M)


def test_minimal_spec_defaults(tmp_path: Path) -> None:
    loaded = load_spec(_write(tmp_path, "cluster: c\nnodes: {a: {address: '2001:db8::1'}}\nprimary: none\n"))
    assert loaded.addresses == {}
    assert loaded.model.primary == "none" and loaded.model.fenced == []
    assert loaded.model.announce.count == 3 and loaded.model.agent.peer_port == 7170


def test_ranges_expand_and_sort(tmp_path: Path) -> None:
    text = HEAD + (
        "floating_ips:\n  interface: eth0\n  addresses:\n"
        "    - 2001:DB8:0:0::A-2001:db8::c/64\n"
        "    - 1.2.3.10/24\n"
        "    - 1.2.3.2-1.2.3.4/24\n"
        "    - {address: 1.2.3.9/24, interface: eth1}\n"
        "    - 1.2.3.100-1.2.3.101/24\n"
    )
    loaded = load_spec(_write(tmp_path, text))
    assert _by_iface(loaded.addresses) == {
        "eth0": (
            "1.2.3.2/24", "1.2.3.3/24", "1.2.3.4/24", "1.2.3.10/24", "1.2.3.100/24", "1.2.3.101/24",
            "2001:db8::a/64", "2001:db8::b/64", "2001:db8::c/64",
        ),
        "eth1": ("1.2.3.9/24",),
    }
    assert parse("1.2.3.9/24") in loaded.all_addresses and len(loaded.all_addresses) == 10
    assert all(a == parse(a.text) for addrs in loaded.addresses.values() for a in addrs)


def test_canonical_forms(tmp_path: Path) -> None:
    text = HEAD + (
        "floating_ips:\n  interface: eth0\n  addresses:\n"
        "    - 2001:0db8:0000:0000:0000:0000:0000:0010/64\n"
        "    - ' 192.0.2.5/24 '\n"
        "    - 10.0.0.0/31\n"
        "    - 10.9.9.9/32\n"
    )
    eth0 = _texts(load_spec(_write(tmp_path, text)).addresses["eth0"])
    assert eth0 == ("10.0.0.0/31", "10.9.9.9/32", "192.0.2.5/24", "2001:db8::10/64")
    assert all(ipaddress.ip_interface(a).with_prefixlen == a for a in eth0)


def test_big_ranges_expand_in_order(tmp_path: Path) -> None:
    # (How fast: bench/noop_cycle and bench/ip_convergence load specs of this size.)
    text = HEAD + (
        "floating_ips:\n  interface: eth0\n  addresses:\n"
        "    - 10.8.0.1-10.8.255.254/16\n"
        "    - 2001:db8:1::-2001:db8:1::ffff/64\n"
    )
    path = _write(tmp_path, text)
    loaded = load_spec(path)
    eth0 = _texts(loaded.addresses["eth0"])
    assert len(eth0) == 65534 + 65536
    assert eth0[0] == "10.8.0.1/16" and eth0[65533] == "10.8.255.254/16"
    assert eth0[65534] == "2001:db8:1::/64" and eth0[-1] == "2001:db8:1::ffff/64"


IPS = """\
# GreenArrow primary IPs
10.5.0.3/24   # mta-3

   10.5.0.1/24
10.5.0.10-10.5.0.12/24
2001:db8:5::1/64
"""


def test_ips_file_read_with_comments(tmp_path: Path) -> None:
    ips = tmp_path / "hvmail_primary_ips"
    ips.write_text(IPS)
    text = HEAD + f"floating_ips:\n  interface: eth0\n  addresses: [10.5.0.2/24]\n  ips_file: {ips}\n"
    path = _write(tmp_path, text)
    loaded = load_spec(path)
    assert _by_iface(loaded.addresses) == {
        "eth0": ("10.5.0.1/24", "10.5.0.2/24", "10.5.0.3/24", "10.5.0.10/24", "10.5.0.11/24", "10.5.0.12/24",
                 "2001:db8:5::1/64"),
    }
    spec_bytes = Path(path).read_bytes()
    assert loaded.digest == hashlib.sha256(spec_bytes + IPS.encode()).hexdigest()


def test_digest_changes_with_ips_file(tmp_path: Path) -> None:
    ips = tmp_path / "ips"
    ips.write_text("10.5.0.1/24\n")
    path = _write(tmp_path, HEAD + f"floating_ips:\n  interface: eth0\n  ips_file: {ips}\n")
    first = load_spec(path)
    ips.write_text("10.5.0.1/24\n# a comment only\n")
    second = load_spec(path)
    assert first.addresses == second.addresses
    assert first.digest != second.digest
    assert load_spec(path).digest == second.digest


def test_ips_file_entries_parsing() -> None:
    assert ips_file_entries(IPS) == [
        (2, "10.5.0.3/24"), (4, "10.5.0.1/24"), (5, "10.5.0.10-10.5.0.12/24"), (6, "2001:db8:5::1/64"),
    ]
    assert ips_file_entries("") == [] and ips_file_entries("#x\n\n   \n") == []


def test_load_spec_from_bytes_and_bom(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + HEAD.replace("\n", "\r\n").encode()
    loaded = load_spec("mem.yaml", data)
    assert isinstance(loaded, LoadedSpec)
    assert loaded.path == "mem.yaml" and loaded.digest == hashlib.sha256(data).hexdigest() and loaded.revision is None
    with pytest.raises(SpecError) as info:
        load_spec("mem.yaml", (HEAD + "bogus: 1\n").replace("\n", "\r\n").encode())
    assert str(info.value).startswith("mem.yaml:6:1: bogus: unknown key")


def test_quoted_keys_and_node_names(tmp_path: Path) -> None:
    text = "cluster: c\nnodes:\n  '1': {address: 10.0.0.1}\n  db.b: {address: 10.0.0.2}\nprimary: '1'\nfenced: [db.b]\n"
    loaded = load_spec(_write(tmp_path, text))
    assert list(loaded.model.nodes) == ["1", "db.b"] and loaded.model.fenced == ["db.b"]


def test_schema_file_is_current() -> None:
    committed = (SPECS / "cluster.schema.json").read_text()
    assert committed == schema_json(), "regenerate: python -m reconciler schema > specs/cluster.schema.json"
    assert schema_json().endswith("}\n") and schema_json() == schema_json()


def _cluster_specs() -> list[Path]:
    out = []
    for path in sorted(SPECS.rglob("*.y*ml")):
        if re.search(r"^cluster:", path.read_text(), re.M):
            out.append(path)
    return out


def test_cluster_specs_name_the_schema() -> None:
    specs = _cluster_specs()
    assert EXAMPLE in specs
    for path in specs:
        first = path.read_text().splitlines()[0]
        m = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
        assert m, f"{path}: first line must be '# yaml-language-server: $schema=...cluster.schema.json'"
        assert (path.parent / m.group(1)).resolve() == (SPECS / "cluster.schema.json").resolve(), path


# --- addresses.py properties -------------------------------------------------------------

_V4 = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=200, deadline=None)
@given(start=_V4, length=st.integers(min_value=0, max_value=300), prefix=st.integers(min_value=31, max_value=32))
def test_expand_matches_ipaddress_v4(start: int, length: int, prefix: int) -> None:
    end = min(start + length, 2**32 - 1)
    got = expand(Block(4, start, end, prefix))
    assert [a.text for a in got] == [ipaddress.IPv4Interface((i, prefix)).with_prefixlen for i in range(start, end + 1)]
    assert [a[:3] for a in got] == [(4, i, prefix) for i in range(start, end + 1)]


@settings(max_examples=200, deadline=None)
@given(
    start=st.one_of(st.integers(min_value=0, max_value=2**128 - 1), st.integers(min_value=0, max_value=2**20),
                    st.integers(min_value=0xFFFF00000000, max_value=0xFFFF00000000 + 2**20)),
    length=st.integers(min_value=0, max_value=70_000),
)
def test_expand_matches_ipaddress_v6(start: int, length: int) -> None:
    end = min(start + length, 2**128 - 1)
    got = expand(Block(6, start, end, 64))
    assert len(got) == end - start + 1
    assert [a.value for a in got] == list(range(start, end + 1)) and {a[0::2] for a in got} <= {(6, 64)}
    for i in {start, end, (start + end) // 2, start | 0xFFFF, (start | 0xFFFF) + 1}:
        if start <= i <= end:
            assert got[i - start].text == ipaddress.IPv6Interface((i, 64)).with_prefixlen


_BLOCKS = st.lists(
    st.tuples(st.sampled_from([4, 6]), st.integers(min_value=0, max_value=60), st.integers(min_value=0, max_value=8)),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(raw=_BLOCKS)
def test_find_overlap_matches_brute_force(raw: list[tuple[int, int, int]]) -> None:
    blocks = [Block(v, s, s + n, 128 if v == 6 else 32) for v, s, n in raw]
    pairs = [(i, j) for j in range(len(blocks)) for i in range(j)
             if blocks[i].version == blocks[j].version
             and blocks[i].start <= blocks[j].end and blocks[j].start <= blocks[i].end]
    got = find_overlap(blocks)
    assert (got is None) == (not pairs)
    if got is not None:
        assert got in pairs
        assert got[1] == min(j for _, j in pairs)


def test_parse_entry_examples() -> None:
    assert parse_entry("1.2.3.2-1.2.3.100/24").count == 99
    assert parse_entry("2001:db8::10/64") == Block(6, int(ipaddress.IPv6Address("2001:db8::10")),
                                                   int(ipaddress.IPv6Address("2001:db8::10")), 64)
    assert parse_entry("10.0.0.5-10.0.0.5/24").count == 1


def test_every_example_spec_is_valid() -> None:
    # specs/ is what an operator starts from (and the package ships): each one must load.
    specs = _cluster_specs()
    assert SPECS / "mail-postfix.example.yaml" in specs
    for path in specs:
        loaded = load_spec(str(path))
        assert loaded.model.nodes, path
