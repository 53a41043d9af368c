"""SO_BINDTOPREFIX (Cloudflare's 2016 RFC patch) as scenarios: the sk_lookup emulation by
default, the real option of a patched kernel with ``--bindtoprefix-optname N``.

The RFC's rules: a socket bound to (prefix, port) receives flows to any address of the
prefix on that port; two prefix-bound sockets of one protocol and port conflict
(EADDRINUSE) when their networks masked with the shorter prefix are equal, unless both set
SO_REUSEPORT, and then sockets on the same prefix share its flows.
"""

from __future__ import annotations

import errno
import ipaddress

import pytest
from bindlab import Namespace
from bindlab.flow import endpoint as ep

FAMILIES = {
    "ipv4": dict(
        net1="192.0.2.0/24",
        net2="198.51.100.0/24",
        low="192.0.2.0/25",
        high="192.0.2.128/25",
        client="198.18.0.1",
        v=4,
    ),
    "ipv6": dict(
        net1="2001:db8:1::/64",
        net2="2001:db8:2::/64",
        low="2001:db8:1::/65",
        high="2001:db8:1:0:8000::/65",
        client="2001:db8:ffff::1",
        v=6,
    ),
}
CLOSED = {"tcp": "RST", "udp": "ICMP"}


def host(prefix: str, n: int) -> str:
    """The ``n``-th address of ``prefix``; negative counts from the end."""
    return str(ipaddress.ip_network(prefix)[n])


@pytest.fixture(params=list(FAMILIES))
def fam(request: pytest.FixtureRequest) -> dict:
    return FAMILIES[request.param]


@pytest.fixture
def lab(netns: Namespace, fam: dict) -> Namespace:
    netns.add_local_route(fam["net1"])
    netns.add_local_route(fam["net2"])
    return netns


def flow(proto: str, fam: dict, sport: int, dst: str, port: int = 80) -> str:
    return f"{proto} {ep(fam['client'], sport)} -> {ep(dst, port)}"


def new(ns: Namespace, proto: str, fam: dict, label: str, reuseport: bool = False):
    """A labelled, unbound socket of the family (options set before binding)."""
    return ns.label(ns.socket(proto, fam["v"], reuseport=reuseport), label)


def test_motivating_example_port_80_split_by_prefix(lab, fam, proto, bind_to_prefix):
    bind_to_prefix(new(lab, proto, fam, "nginx"), fam["net1"], 80)
    bind_to_prefix(new(lab, proto, fam, "apache"), fam["net2"], 80)
    rows = {
        flow(proto, fam, 40000, host(fam["net1"], 7)): "nginx",
        flow(proto, fam, 40001, host(fam["net1"], -2)): "nginx",
        flow(proto, fam, 40002, host(fam["net2"], 7)): "apache",
        flow(proto, fam, 40003, host(fam["net2"], 7), 81): CLOSED[proto],  # bound to port 80 only
    }
    assert lab.probe(rows) == rows


@pytest.mark.parametrize(
    ("first", "second"),
    [("net1", "low"), ("low", "net1"), ("net1", "net1")],
    ids=["wide-then-narrow", "narrow-then-wide", "same-prefix"],
)
@pytest.mark.parametrize(
    "reuse", [(False, False), (True, False), (False, True)], ids=["plain", "a-reuse", "b-reuse"]
)
def test_overlapping_prefixes_conflict(lab, fam, proto, bind_to_prefix, first, second, reuse):
    bind_to_prefix(new(lab, proto, fam, "a", reuse[0]), fam[first], 80)
    with pytest.raises(OSError) as e:
        bind_to_prefix(new(lab, proto, fam, "b", reuse[1]), fam[second], 80)
    assert e.value.errno == errno.EADDRINUSE
    if not bind_to_prefix.real:  # the emulation names both sockets
        assert "b (" in str(e.value) and "a (" in str(e.value)
    # The first binding is intact.
    assert lab.probe([flow(proto, fam, 40000, host(fam[first], 1))]) == {
        flow(proto, fam, 40000, host(fam[first], 1)): "a"
    }


def test_disjoint_halves_share_a_port(lab, fam, proto, bind_to_prefix):
    bind_to_prefix(new(lab, proto, fam, "low"), fam["low"], 80)
    bind_to_prefix(new(lab, proto, fam, "high"), fam["high"], 80)
    rows = {
        flow(proto, fam, 40000, host(fam["low"], 1)): "low",
        flow(proto, fam, 40001, host(fam["low"], -1)): "low",  # last address of the low half
        flow(proto, fam, 40002, host(fam["high"], 0)): "high",  # first of the high half
        flow(proto, fam, 40003, host(fam["high"], -2)): "high",
    }
    assert lab.probe(rows) == rows


def test_same_prefix_other_port_or_protocol_does_not_conflict(lab, fam, bind_to_prefix):
    bind_to_prefix(new(lab, "tcp", fam, "web"), fam["net1"], 80)
    bind_to_prefix(new(lab, "tcp", fam, "alt"), fam["net1"], 8080)
    bind_to_prefix(new(lab, "udp", fam, "quic"), fam["net1"], 80)
    dst = host(fam["net1"], 9)
    rows = {
        flow("tcp", fam, 40000, dst, 80): "web",
        flow("tcp", fam, 40001, dst, 8080): "alt",
        flow("udp", fam, 40002, dst, 80): "quic",
    }
    assert lab.probe(rows) == rows


def test_reuseport_group_spreads_flows(lab, fam, proto, bind_to_prefix):
    for label in ("a", "b", "c"):
        bind_to_prefix(new(lab, proto, fam, label, reuseport=True), fam["net1"], 80)
    got = lab.distribution(
        [flow(proto, fam, 40000 + i, host(fam["net1"], 1 + i % 50)) for i in range(90)]
    )
    assert set(got) == {"a", "b", "c"}, got  # P(a member gets none of 90) < 1e-15


def test_reuseport_group_survives_a_member_closing(lab, fam, proto, bind_to_prefix):
    a = bind_to_prefix(new(lab, proto, fam, "a", reuseport=True), fam["net1"], 80)
    bind_to_prefix(new(lab, proto, fam, "b", reuseport=True), fam["net1"], 80)
    a.close()
    got = lab.distribution([flow(proto, fam, 40000 + i, host(fam["net1"], 5)) for i in range(20)])
    assert got == {"b": 20}


def test_rebind_after_close(lab, fam, proto, bind_to_prefix):
    """A closed prefix socket frees its prefix: a new (non-reuseport) socket may take it."""
    bind_to_prefix(new(lab, proto, fam, "old"), fam["net1"], 80).close()
    bind_to_prefix(new(lab, proto, fam, "new"), fam["low"], 80)
    assert lab.probe([flow(proto, fam, 40000, host(fam["low"], 3))]) == {
        flow(proto, fam, 40000, host(fam["low"], 3)): "new"
    }


@pytest.mark.emulation_only
def test_nested_reuseport_prefixes_longest_wins(lab, fam, proto, bind_to_prefix):
    """Both set SO_REUSEPORT on nested prefixes: allowed, and the longer prefix gets its
    addresses (the emulation's reading; the RFC leaves nested groups open)."""
    bind_to_prefix(new(lab, proto, fam, "wide", reuseport=True), fam["net1"], 80)
    bind_to_prefix(new(lab, proto, fam, "narrow", reuseport=True), fam["high"], 80)
    rows = {
        flow(proto, fam, 40000, host(fam["low"], 3)): "wide",
        flow(proto, fam, 40001, host(fam["high"], 3)): "narrow",
    }
    assert lab.probe(rows) == rows


@pytest.mark.emulation_only
def test_prefix_with_host_bits_is_refused(lab, fam, bind_to_prefix):
    from bindlab import ConfigError

    bad = host(fam["net1"], 5) + ("/24" if fam["v"] == 4 else "/64")
    with pytest.raises(ConfigError, match="host bits set"):
        bind_to_prefix(new(lab, "tcp", fam, "x"), bad, 80)
