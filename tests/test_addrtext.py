"""The fast address-text helpers agree with `ipaddress` on every input, valid or not."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reconciler.addrtext import fast_v4, interface, sort_key
from reconciler.execute.net import parse_items

octet = st.one_of(st.integers(0, 255).map(str), st.sampled_from(["00", "01", "256", "999", "", "1a", "٣", " 1", "+1"]))
plen = st.one_of(st.integers(0, 32).map(str), st.sampled_from(["", "33", "032", "-1", "1.5", "٣"]))
v4_text = st.builds(lambda a, b, c, d, p, sep: f"{a}.{b}.{c}.{d}{sep}{p}", octet, octet, octet, octet, plen,
                    st.sampled_from(["/", "/", "/", "", "//"]))
v6_text = st.builds(lambda ip, p: f"{ip}/{p}", st.ip_addresses(v=6).map(str), st.integers(0, 128))
texts = st.one_of(v4_text, v6_text, st.text(max_size=20))


def _reference(text: str):  # noqa: ANN202
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        return None


@settings(max_examples=3000, deadline=None)
@given(texts)
@example("10.0.0.1/32")
@example("010.0.0.1/32")
@example("10.0.0.1/032")
@example("10.0.0.1")
@example("0.0.0.0/0")
def test_same_results_and_errors_as_ipaddress(text: str) -> None:
    ref = _reference(text)
    if ref is None:
        with pytest.raises(ValueError):
            interface(text)
        with pytest.raises(ValueError):
            sort_key(text)
        assert fast_v4(text) is None
        return
    got = interface(text)
    assert got == ref and type(got) is type(ref) and got.with_prefixlen == ref.with_prefixlen
    assert sort_key(text) == (ref.version, int(ref.ip), ref.network.prefixlen)
    fast = fast_v4(text)
    if fast is not None:
        assert ref.version == 4 and fast == (int(ref.ip), ref.network.prefixlen) and text == ref.with_prefixlen


@settings(max_examples=1000, deadline=None)
@given(st.lists(texts, max_size=8))
def test_parse_items_accepts_and_refuses_as_ipaddress_would(items: list[str]) -> None:
    want: dict[str, object] = {}
    bad = False
    for item in items:
        ref = _reference(item.strip()) if "/" in item else None
        if ref is None or ref.ip.is_multicast or ref.ip.is_unspecified:
            bad = True
            break
        want.setdefault(ref.with_prefixlen, ref)
    if bad:
        with pytest.raises(ValueError):
            parse_items(items)
    else:
        assert parse_items(items) == list(want.values())
