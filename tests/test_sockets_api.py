"""Sockets of every transport protocol, options after creation, bind_errno, and errors that
say why (issue 13, items 4 and 6)."""

from __future__ import annotations

import errno
import socket

import pytest
from bindlab import ConfigError, Namespace

PROTOS = [
    pytest.param("tcp", id="tcp"),
    pytest.param("udp", id="udp"),
    # Debian's 6.1 has MPTCP but refuses this option on it (ENOPROTOOPT); 6.18 takes it
    pytest.param("mptcp", id="mptcp", marks=pytest.mark.requires("MPTCP_LOCAL_PORT_RANGE")),
    pytest.param("sctp", id="sctp", marks=pytest.mark.requires("SCTP")),
]


@pytest.mark.requires("IP_LOCAL_PORT_RANGE")
@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_every_protocol_takes_options_after_creation(
    netns: Namespace, proto: str, family: int
) -> None:
    s = netns.socket(proto, family)
    netns.set_option(s, "local_port_range", (40000, 40511))
    assert netns.get_option(s, "local_port_range") == (40000, 40511)
    assert s.proto == {"tcp": 0, "udp": 0, "mptcp": 262, "sctp": socket.IPPROTO_SCTP}[proto]


@pytest.mark.requires("MPTCP")
def test_an_mptcp_listener_receives_a_plain_tcp_flow(netns: Namespace) -> None:
    netns.add_local_route("192.0.2.0/24")
    s = netns.socket("mptcp")
    s.bind(("192.0.2.1", 80))
    s.listen()
    netns.label(s, "mp")
    assert list(netns.probe(["tcp 198.18.0.1:1000 -> 192.0.2.1:80"]).values()) == ["mp"]


def test_unknown_protocol_names_the_choices(netns: Namespace) -> None:
    with pytest.raises(ConfigError, match="unknown protocol 'dccp': use one of tcp, udp"):
        netns.socket("dccp")


def test_bind_errno_rows(netns: Namespace) -> None:
    """A bind-conflict table, one call per row (selftests/net/bind_wildcard.c's shape)."""
    netns.add_local_route("192.0.2.0/24")
    assert netns.bind_errno("192.0.2.1:80", label="a") is None
    assert netns.bind_errno("0.0.0.0:80") == "EADDRINUSE"
    assert netns.bind_errno("192.0.2.2:80") is None  # another address: no conflict
    assert netns.bind_errno("192.0.2.1:80", proto="udp") is None  # another protocol
    assert netns.bind_errno("203.0.113.1:81") == "EADDRNOTAVAIL"  # not local
    assert netns.bind_errno("203.0.113.1:81", freebind=True) is None
    assert [lbl for lbl, _ in netns.sockets.values()] == ["a"]


def test_eaddrinuse_names_the_labelled_holder(netns: Namespace) -> None:
    netns.add_local_route("192.0.2.0/24")
    netns.tcp_listener("192.0.2.1:80", label="web")
    with pytest.raises(OSError, match=r"port 80 is held by 'web' \(192.0.2.1:80\)") as e:
        netns.tcp_listener("0.0.0.0:80", label="any")
    assert e.value.errno == errno.EADDRINUSE
    s = netns.socket()
    with pytest.raises(OSError, match="held by 'web'"):
        s.bind(("192.0.2.1", 80))  # a raw socket of the namespace says it too


def test_ipv6_bind_inside_a_local_route_says_how_to_allow_it(netns: Namespace) -> None:
    netns.add_local_route("2001:db8::/64")
    with pytest.raises(OSError, match=r"freebind=True .* net.ipv6.ip_nonlocal_bind=1") as e:
        netns.tcp_listener("[2001:db8::1]:80", label="v6")
    assert e.value.errno == errno.EADDRNOTAVAIL
    netns.tcp_listener("[2001:db8::1]:80", label="v6", freebind=True)  # the hint works
    netns.add_local_route("192.0.2.0/24")
    netns.tcp_listener("192.0.2.1:80", label="v4")  # IPv4 needs neither


def test_connect_before_the_injector_says_where_routes_come_from(netns: Namespace) -> None:
    s = netns.socket()
    with pytest.raises(OSError, match=r"connect\(198.18.0.1:80\).*ns.injector") as e:
        s.connect(("198.18.0.1", 80))
    assert e.value.errno == errno.ENETUNREACH


def test_a_label_names_one_socket(netns: Namespace) -> None:
    netns.add_local_route("192.0.2.0/24")
    netns.tcp_listener("192.0.2.1:80", label="web")
    with pytest.raises(ConfigError, match=r"'web' is already used .* tcp socket on 192.0.2.1:80"):
        netns.tcp_listener("192.0.2.2:80", label="web")
    s = netns.socket()
    netns.label(s, "spare")
    netns.label(s, "spare")  # the same socket again: fine
    s.close()
    netns.label(netns.socket(), "spare")  # the label's socket is closed: free again
