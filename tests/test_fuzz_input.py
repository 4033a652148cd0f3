"""Fuzz the spec loader and the snapshot loader through the real CLI (`main(argv)`, in
process): arbitrary YAML/JSON structures, mutations of a valid spec, arbitrary bytes,
invalid UTF-8, deep nesting, huge numbers, anchors and aliases.  Whatever the input:
never a traceback or an internal error, never a hang (each run is bounded by an alarm),
exit 0/2 when valid or 1 with ONE `FILE:LINE:COL: key.path: reason` line, and no string
value from the file (each carries the marker `Qx7`) quoted in it.

CI cost: 410 examples in all (plus the explicit ones), about 10 s of CPU (the `FUZZ_EXAMPLES` environment
variable scales every test's example count, for a longer local run).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reconciler.cli.main import main

MARK = "Qx7"
SCALE = float(os.environ.get("FUZZ_EXAMPLES", "1"))
LINE_RE = re.compile(r"^(?:reconciler: )?(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<key>\S+): (?P<reason>.+)$")
SECONDS = 10  # per run; a real hang (the billion laughs) would take minutes


def fuzz_settings(n: int) -> settings:
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


VALID = {
    "cluster": "mail",
    "nodes": {"mx1": {"address": "10.0.0.1"}, "mx2": {"address": "10.0.0.2"}},
    "primary": "mx1",
    "floating_ips": {"interface": "eth0", "addresses": ["192.0.2.10/24", "192.0.2.20-192.0.2.30/24"]},
    "drbd": [{"name": "r0", "device": "/dev/drbd0", "mount": "/srv", "options": ["noatime"]}],
    "postgres": {"data_dir": "/var/lib/pg", "port": 5432, "replication_source": "primary"},
    "services": [{"name": "postfix.service"}],
    "agent": {"peer_port": 7170},
}
SNAPSHOT = {
    "format": 1, "node": "mx1",
    "interfaces": {"eth0": {"addresses": [{"address": "192.0.2.10/24", "owned": True}]}},
    "drbd": {"r0": {"configured": True, "role": "Primary"}},
    "postgres": {"running": True, "in_recovery": False, "current_lsn": "0/3000000"},
    "services": {"postfix.service": {"active": True}},
}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    (d / "spec.yaml").write_text(yaml.safe_dump(VALID))
    return d


class _Hang(Exception):
    pass


@contextlib.contextmanager
def _bounded(seconds: int) -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise _Hang(f"no answer in {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_cli(argv: list[str], path: Path, ok: tuple[int, ...]) -> str:
    """Run main(argv); check the exit code and, on exit 1, the one line naming `path`."""
    out, err = io.StringIO(), io.StringIO()
    with _bounded(SECONDS), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    text = err.getvalue()
    assert "Traceback" not in text and "internal error" not in text, text
    assert rc in (*ok, 1), (rc, text)
    if rc == 1:
        lines = text.splitlines()
        assert len(lines) == 1, text
        m = LINE_RE.match(lines[0])
        assert m and m["file"] == str(path), lines[0]
        assert MARK not in m["key"] and MARK not in m["reason"], lines[0]
    return text


def validate(work: Path, data: bytes) -> str:
    path = work / "fuzz.yaml"
    path.write_bytes(data)
    return run_cli(["validate", str(path)], path, ok=(0,))


def plan_observed(work: Path, data: bytes) -> str:
    path = work / "fuzz.json"
    path.write_bytes(data)
    return run_cli(["plan", str(work / "spec.yaml"), "--node", "mx1", "--observed", str(path)], path, ok=(0, 2))


# -- strategies ------------------------------------------------------------------------

keys = st.one_of(st.sampled_from(["cluster", "nodes", "mx1", "address", "primary", "floating_ips", "addresses",
                                  "interface", "postgres", "data_dir", "port", "services", "name", "format",
                                  "node", "interfaces", "drbd", "errors", "owned"]),
                 st.text(max_size=12))
strings = st.text(max_size=20).map(lambda s: MARK + s)  # every string value carries the marker
numbers = st.one_of(st.integers(), st.integers(min_value=-(10**60), max_value=10**60),
                    st.floats(allow_nan=False, allow_infinity=False))
leaves = st.one_of(st.none(), st.booleans(), numbers, strings)
values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(keys, inner, max_size=4)), max_leaves=20)
documents = st.dictionaries(keys, values, max_size=6) | values


def _paths(obj: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, at + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, at + (i,))
    return out


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(obj) if isinstance(obj, dict) else list(obj)
    copy[path[0]] = _replace(obj[path[0]], path[1:], value)
    return copy


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """`base` with one to three of its values (or the whole) replaced by arbitrary ones, half
    of them marked strings (the likeliest to be quoted back)."""
    doc: Any = base
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        doc = _replace(doc, draw(st.sampled_from(paths)), draw(strings | values))
    return doc


def _yaml(doc: Any) -> bytes:
    return yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass")


# -- the spec loader -------------------------------------------------------------------

@fuzz_settings(60)
@given(documents)
def test_spec_arbitrary_structures(work: Path, doc: Any) -> None:
    validate(work, _yaml(doc))


@fuzz_settings(80)
@given(mutated(VALID))
def test_spec_mutations(work: Path, doc: Any) -> None:
    validate(work, _yaml(doc))


YAML_BITS = ["a", ":", ": ", "- ", "-", "[", "]", "{", "}", ",", "&x ", "*x", "!!str ", "!t ", "<<: ", "'", '"',
             "#", "\n", "\n  ", "\t", "|", ">", "%", "@", "`", "?", "\\", "\x00", "\x07", "\ufeff", "\udcff", "é",
             "10.0.0.1", "1e9999", "9" * 5000, "~", "null", "yes", "2001-02-03", "0x1F", "0o17", ".inf", MARK]


@fuzz_settings(60)
@given(st.lists(st.sampled_from(YAML_BITS), max_size=40))
@example(["[" * 10_000])
@example(["{a: " * 3000])
@example(["- " * 3000])
def test_spec_yaml_fragments(work: Path, bits: list[str]) -> None:
    validate(work, "".join(bits).encode("utf-8", "surrogatepass"))


@fuzz_settings(50)
@given(st.binary(max_size=300))
@example(b"\xff\xfe\x00\x00")
@example(b"\xef\xbb\xbfcluster: mail\n")
@example(b"cluster: \xc3\x28\n")
def test_spec_arbitrary_bytes(work: Path, data: bytes) -> None:
    validate(work, data)


def test_spec_billion_laughs_is_refused_at_once(work: Path) -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    start = time.monotonic()
    err = validate(work, ("\n".join(lines) + "\n").encode())
    assert "anchors and aliases" in err and time.monotonic() - start < 2


# -- the snapshot loader ---------------------------------------------------------------

@fuzz_settings(50)
@given(documents)
def test_snapshot_arbitrary_structures(work: Path, doc: Any) -> None:
    plan_observed(work, json.dumps(doc).encode())


@fuzz_settings(60)
@given(mutated(SNAPSHOT))
def test_snapshot_mutations(work: Path, doc: Any) -> None:
    plan_observed(work, json.dumps(doc).encode())


@fuzz_settings(50)
@given(st.binary(max_size=300) | st.text(alphabet='{}[]",:0123456789.eE+-tfrnul \\\x00\x1f', max_size=60).map(
    lambda s: s.encode("utf-8")))
@example(b"[" * 100_000)
@example(b'{"format": ' + b"9" * 100_000 + b"}")
@example(b"\xef\xbb\xbf{}")
def test_snapshot_arbitrary_bytes(work: Path, data: bytes) -> None:
    plan_observed(work, data)
