"""One table, three variants: the ``family`` fixture runs a test as IPv4, IPv6 and
IPv4-mapped, with addresses written once (issue 13, item 1)."""

from __future__ import annotations

import pytest
from bindlab import Namespace
from bindlab.families import Family

# (flow, expected label), IPv4 as written; each variant maps the addresses.
ROWS = [
    ("tcp 198.18.0.1:40000 -> 192.0.2.10:80", "spec"),  # the exact address wins
    ("tcp 198.18.0.1:40001 -> 192.0.2.20:80", "wild"),  # any other address: the wildcard
    ("tcp 198.18.0.1:40002 -> 192.0.2.10:81", "RST"),  # nobody on the port
    ("udp 198.18.0.1:40003 -> 192.0.2.10:53", "udp-spec"),
    ("udp 198.18.0.1:40004 -> 192.0.2.11:53", "udp-wild"),
]


def test_specific_beats_wildcard(netns: Namespace, family: Family) -> None:
    netns.add_local_route(family.prefix("192.0.2.0/24"))
    if family.name == "ipv6":
        netns.sysctl("net.ipv6.ip_nonlocal_bind", 1)
    netns.tcp_listener(family.endpoint("0.0.0.0:80"), "wild", reuseport=True)
    netns.tcp_listener(family.endpoint("192.0.2.10:80"), "spec", reuseport=True)
    netns.udp_socket(family.endpoint("0.0.0.0:53"), "udp-wild", reuseaddr=True)
    netns.udp_socket(family.endpoint("192.0.2.10:53"), "udp-spec", reuseaddr=True)
    rows = {family.flow(f): label for f, label in ROWS}
    assert netns.probe(rows) == rows


@pytest.mark.families("v4mapped")
def test_a_mapped_socket_is_a_dual_stack_ipv6_socket(netns: Namespace, family: Family) -> None:
    netns.add_local_route(family.prefix("192.0.2.0/24"))
    s = netns.tcp_listener(family.endpoint("192.0.2.10:80"), "m")
    assert s.getsockname()[0] == "::ffff:192.0.2.10"
    assert netns.get_option(s, "v6only") is False
