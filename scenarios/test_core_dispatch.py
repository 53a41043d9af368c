"""The ground rules of socket lookup, as verdicts: the harness's own acceptance scenarios.

Each test is a table of (flow, expected verdict) rows over real sockets in a fresh
namespace. Family-neutral tests run as IPv4 and IPv6 (`fam` parameter).
"""

from __future__ import annotations

import pytest
from bindlab import Namespace
from bindlab.flow import endpoint

# Per family: local prefix, a local address in it, a wildcard, a non-local destination, a client.
FAMILIES = {
    4: dict(
        prefix="192.0.2.0/24",
        local="192.0.2.10",
        other="192.0.2.20",
        any="0.0.0.0",
        nonlocal_="203.0.113.9",
        client="198.18.0.1",
    ),
    6: dict(
        prefix="2001:db8:1::/64",
        local="2001:db8:1::10",
        other="2001:db8:1::20",
        any="::",
        nonlocal_="2001:db8:99::9",
        client="2001:db8:ffff::1",
    ),
}


def ep(fam: int, ip: str, port: int) -> str:
    return endpoint(ip, port)


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def fam(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.fixture
def lab(netns: Namespace, fam: int) -> tuple[Namespace, dict[str, str]]:
    a = FAMILIES[fam]
    netns.add_local_route(a["prefix"])
    if fam == 6:
        # IPv6 delivers to a local route, but bind() only accepts assigned addresses unless
        # non-local bind is on (test_ipv6_bind_in_local_route_needs_nonlocal_bind).
        netns.sysctl("net.ipv6.ip_nonlocal_bind", 1)
    return netns, a


def flow(fam: int, proto: str, a: dict[str, str], sport: int, dst: str, dport: int) -> str:
    return f"{proto} {ep(fam, a['client'], sport)} -> {ep(fam, dst, dport)}"


def test_tcp_specific_listener_beats_wildcard(lab, fam):
    ns, a = lab
    # Beside a wildcard on the same port a specific TCP listener needs SO_REUSEPORT on both.
    ns.tcp_listener(ep(fam, a["any"], 80), label="wildcard", reuseport=True)
    ns.tcp_listener(ep(fam, a["local"], 80), label="specific", reuseport=True)
    rows = {
        flow(fam, "tcp", a, 40000, a["local"], 80): "specific",
        flow(fam, "tcp", a, 40001, a["other"], 80): "wildcard",  # another address of the prefix
    }
    assert ns.probe(rows) == rows


def test_udp_specific_socket_beats_wildcard(lab, fam):
    ns, a = lab
    ns.udp_socket(ep(fam, a["any"], 53), label="wildcard", reuseaddr=True)
    ns.udp_socket(ep(fam, a["local"], 53), label="specific", reuseaddr=True)
    rows = {
        flow(fam, "udp", a, 40000, a["local"], 53): "specific",
        flow(fam, "udp", a, 40001, a["other"], 53): "wildcard",
    }
    assert ns.probe(rows) == rows


def test_specific_and_wildcard_conflict_without_reuse(lab, fam):
    ns, a = lab
    ns.tcp_listener(ep(fam, a["any"], 80), label="wildcard")
    with pytest.raises(OSError) as e:
        ns.tcp_listener(ep(fam, a["local"], 80), label="specific")
    assert e.value.errno == 98  # EADDRINUSE


def test_closed_port_is_reset_and_closed_udp_port_is_unreachable(lab, fam):
    ns, a = lab
    ns.tcp_listener(ep(fam, a["local"], 80), label="web")
    rows = {
        flow(fam, "tcp", a, 40000, a["local"], 81): "RST",
        flow(fam, "udp", a, 40000, a["local"], 81): "ICMP",
        flow(fam, "tcp", a, 40001, a["local"], 80): "web",  # the control row
    }
    assert ns.probe(rows) == rows


def test_non_local_destination_gets_nothing(lab, fam):
    ns, a = lab
    ns.tcp_listener(ep(fam, a["any"], 80), label="wildcard")
    ns.udp_socket(ep(fam, a["any"], 53), label="dns")
    # Forwarding is off in a new namespace: a packet for a non-local address is dropped silently.
    rows = {
        flow(fam, "tcp", a, 40000, a["nonlocal_"], 80): "NONE",
        flow(fam, "udp", a, 40000, a["nonlocal_"], 53): "NONE",
        flow(fam, "tcp", a, 40001, a["local"], 80): "wildcard",
    }
    assert ns.probe(rows) == rows


def test_connected_udp_beats_bound_on_its_exact_4tuple(lab, fam):
    ns, a = lab
    peer = ep(fam, a["client"], 5353)
    ns.udp_socket(ep(fam, a["local"], 53), label="bound", reuseaddr=True)
    ns.udp_socket(ep(fam, a["local"], 53), label="connected", reuseaddr=True, connect=peer)
    rows = {
        flow(fam, "udp", a, 5353, a["local"], 53): "connected",  # the exact 4-tuple
        flow(fam, "udp", a, 5354, a["local"], 53): "bound",  # another source port
    }
    assert ns.probe(rows) == rows


def test_probing_twice_gives_the_same_verdicts(lab, fam):
    """A probe leaves no half-open state behind: the same flows probe the same again."""
    ns, a = lab
    ns.tcp_listener(ep(fam, a["local"], 80), label="web")
    rows = {flow(fam, "tcp", a, 40000 + i, a["local"], 80): "web" for i in range(50)}
    assert ns.probe(rows) == rows
    assert ns.probe(rows) == rows


def test_reuseport_group_spreads_flows(lab, fam):
    ns, a = lab
    for i in range(4):
        ns.tcp_listener(ep(fam, a["local"], 80), label=f"worker{i}", reuseport=True)
    flows = [flow(fam, "tcp", a, 1024 + i, a["local"], 80) for i in range(4000)]
    got = ns.distribution(flows)
    assert set(got) == {f"worker{i}" for i in range(4)}, got
    for label, n in got.items():
        assert 750 <= n <= 1250, f"{label} got {n} of 4000 flows (expected 1000 +-25%): {got}"


def test_ipv6_bind_in_local_route_needs_nonlocal_bind(netns):
    """IPv4 bind() accepts any address of a local route; IPv6 bind() does not (EADDRNOTAVAIL)
    until net.ipv6.ip_nonlocal_bind (or IPV6_FREEBIND) allows it. Delivery works either way."""
    netns.add_local_route("192.0.2.0/24")
    netns.add_local_route("2001:db8:1::/64")
    netns.tcp_listener("192.0.2.10:80", label="v4")
    with pytest.raises(OSError) as e:
        netns.tcp_listener("[2001:db8:1::10]:80", label="v6")
    assert e.value.errno == 99  # EADDRNOTAVAIL
    netns.tcp_listener("[2001:db8:1::10]:80", label="v6", freebind=True)
    rows = {
        "tcp 198.18.0.1:1000 -> 192.0.2.10:80": "v4",
        "tcp [2001:db8:ffff::1]:1000 -> [2001:db8:1::10]:80": "v6",
    }
    assert netns.probe(rows) == rows
