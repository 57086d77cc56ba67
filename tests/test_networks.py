"""Address handling against Python's ipaddress, including every boundary of a network."""
from __future__ import annotations

import ipaddress

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpcwatch.engines.duckdb import AddressMatcher
from rpcwatch.networks import (
    DEFAULT_INTERNAL,
    DEFAULT_NON_ROUTABLE,
    NetworkError,
    NetworkSet,
    address_in,
    address_key,
    merged_key_ranges,
    network_key_ranges,
    parse_address,
    parse_network,
)

ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
mapped = ipv4.map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}"))
addresses = st.one_of(ipv4, ipv6, mapped)


@st.composite
def networks(draw):
    if draw(st.booleans()):
        prefix = draw(st.integers(0, 32))
        base = draw(ipv4)
        return ipaddress.IPv4Network((int(base) >> (32 - prefix) << (32 - prefix), prefix))
    prefix = draw(st.integers(0, 128))
    base = draw(ipv6)
    return ipaddress.IPv6Network((int(base) >> (128 - prefix) << (128 - prefix), prefix))


def oracle(address, nets) -> bool:
    """ipaddress's own answer, with IPv4-mapped IPv6 judged as IPv4 and versions kept apart."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    normalised = []
    for net in nets:
        if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(
                ipaddress.IPv6Network("::ffff:0:0/96")):
            net = ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
        normalised.append(net)
    return any(address.version == n.version and address in n for n in normalised)


def in_ranges(address, nets) -> bool:
    key = address_key(parse_address(str(address)))
    return any(lo <= key <= hi for lo, hi in merged_key_ranges(nets))


def boundaries(net):
    first, last = int(net.network_address), int(net.broadcast_address)
    cls = type(net.network_address)
    top = 2**32 - 1 if net.version == 4 else 2**128 - 1
    return [cls(v) for v in {first, last, max(first - 1, 0), min(last + 1, top)}]


@settings(max_examples=400, deadline=None)
@given(st.lists(networks(), min_size=1, max_size=4), addresses)
def test_key_ranges_agree_with_ipaddress(nets, address):
    assert in_ranges(address, nets) == oracle(address, nets)


@settings(max_examples=300, deadline=None)
@given(networks())
def test_every_boundary_of_a_network(net):
    for address in boundaries(net):
        assert in_ranges(address, [net]) == oracle(address, [net]), (address, net)


@settings(max_examples=200, deadline=None)
@given(st.lists(networks(), min_size=1, max_size=3), st.lists(addresses, min_size=1, max_size=30))
def test_engine_function_agrees_with_ipaddress(nets, sample):
    """The DuckDB engine's rpcw_ip_in, called as DuckDB calls it (a vector and a spec)."""
    texts = []
    for address in sample + [b for net in nets for b in boundaries(net)]:
        text = str(address)
        texts += [text, text.upper(), f" {text} "]
    spec = ",".join(str(n) for n in nets)
    verdicts = AddressMatcher()(pa.array(texts), pa.array([spec] * len(texts))).to_pylist()
    expected = [oracle(ipaddress.ip_address(t.strip()), nets) for t in texts]
    assert verdicts == expected


@pytest.mark.parametrize("text,expected", [
    ("::ffff:10.1.2.3", "10.1.2.3"),
    ("::FFFF:0A01:0203", "10.1.2.3"),
    ("FE80::1%eth0", "fe80::1"),
    ("[2001:DB8::1]", "2001:db8::1"),
    (" 192.168.0.1 ", "192.168.0.1"),
    ("010.1.1.1", None),
    ("1.2.3", None),
    ("not-an-ip", None),
    ("", None),
])
def test_parse_address_normalises_what_logs_write(text, expected):
    parsed = parse_address(text)
    assert (str(parsed) if parsed else None) == expected


def test_ipv4_mapped_address_is_judged_as_ipv4():
    internal = NetworkSet.parse(DEFAULT_INTERNAL)
    assert "::ffff:10.0.0.1" in internal
    assert "::ffff:8.8.8.8" not in internal


def test_ipv6_network_never_matches_ipv4_addresses():
    everything_v6 = parse_network("::/0")
    assert not in_ranges(ipaddress.IPv4Address("8.8.8.8"), [everything_v6])
    assert in_ranges(ipaddress.IPv6Address("2001:4860::8888"), [everything_v6])
    assert network_key_ranges(everything_v6)[0][1] == f"{0xffff00000000 - 1:032x}"


def test_ipv4_mapped_network_becomes_ipv4_network():
    assert parse_network("::ffff:10.0.0.0/104") == ipaddress.IPv4Network("10.0.0.0/8")


def test_host_bits_are_refused_with_a_suggestion():
    with pytest.raises(NetworkError, match="did you mean 10.0.0.0/8"):
        parse_network("10.0.0.1/8")
    with pytest.raises(NetworkError, match="not an IPv4 or IPv6 network"):
        parse_network("10.0.0.0/33")


@pytest.mark.parametrize("source,excluded", [
    ("8.8.8.8", False), ("172.15.255.255", False), ("172.32.0.0", False), ("100.63.255.255", False),
    ("100.128.0.0", False), ("192.169.0.1", False), ("11.0.0.1", False), ("2a00:1450::1", False),
    ("172.16.0.0", True), ("172.31.255.255", True), ("100.64.0.0", True), ("100.127.255.255", True),
    ("0.1.2.3", True), ("255.255.255.255", True), ("224.0.0.1", True), ("::", True), ("::1", True),
    ("2001:db8::5", True), ("100::1", True), ("fec0::1", True), ("fd00::1", True), ("fe80::1", True),
    ("ff02::1", True), ("192.0.0.9", True), ("192.31.196.1", True), ("::ffff:127.0.0.1", True),
])
def test_default_non_routable_list(source, excluded):
    assert (source in NetworkSet.parse(DEFAULT_NON_ROUTABLE)) is excluded


def test_address_in_is_version_strict():
    assert not address_in(ipaddress.ip_address("10.0.0.1"), [ipaddress.ip_network("::/0")])
