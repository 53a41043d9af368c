"""Socket option validation: unknown names, bad values, and kernel refusals name the option."""

from __future__ import annotations

import contextlib
import errno
import os
import socket

import pytest
from bindlab import ConfigError, Namespace, SockOptError
from bindlab.sockets import get_local_port_range, parse_addr, set_option
from bindlab.sockopts import OPTIONS, _bool, get_option


@pytest.fixture
def sock():
    s = socket.socket()  # options only: never bound, never sends
    yield s
    s.close()


@pytest.mark.parametrize(
    ("name", "value", "culprit"),
    [
        ("reuseprot", True, "unknown socket option 'reuseprot'"),
        ("reuseport", 1, "expected True/False, got 1"),
        ("local_port_range", (40000,), "expected (lo, hi)"),
        ("local_port_range", (40000, 70000), "port out of range"),
        ("local_port_range", (-1, 40000), "port out of range"),
        ("local_port_range", ("a", "b"), "expected (lo, hi)"),
        ("bindtodevice", "a-name-longer-than-15", "interface name"),
        ("bindtoifindex", "eth0", "expected an integer"),
    ],
)
def test_bad_names_and_values_are_config_errors(sock, name, value, culprit) -> None:
    with pytest.raises(ConfigError) as e:
        set_option(sock, name, value)
    assert culprit in str(e.value)


def test_kernel_refusal_names_option_and_errno(sock) -> None:
    # The kernel checks lo <= hi for IP_LOCAL_PORT_RANGE (EINVAL), not our validator.
    with pytest.raises(SockOptError) as e:
        set_option(sock, "local_port_range", (40511, 40000))
    assert e.value.errno == errno.EINVAL
    assert e.value.option == "local_port_range"
    assert "local_port_range" in str(e.value) and "EINVAL" in str(e.value)


def test_negative_ifindex_is_refused_by_the_kernel(sock) -> None:
    with pytest.raises(SockOptError) as e:
        set_option(sock, "bindtoifindex", -1)
    assert e.value.errno == errno.EINVAL and "bindtoifindex" in str(e.value)


def test_local_port_range_round_trip(sock) -> None:
    set_option(sock, "local_port_range", (40000, 40511))
    assert get_local_port_range(sock) == (40000, 40511)


@pytest.mark.parametrize(
    ("text", "family", "addr"),
    [
        ("192.0.2.1:80", socket.AF_INET, ("192.0.2.1", 80)),
        ("0.0.0.0:0", socket.AF_INET, ("0.0.0.0", 0)),
        ("[2001:db8::1]:443", socket.AF_INET6, ("2001:db8::1", 443)),
        ("[::]:80", socket.AF_INET6, ("::", 80)),
    ],
)
def test_parse_addr(text, family, addr) -> None:
    assert parse_addr(text) == (family, addr)


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("192.0.2.1", "expected IP:PORT"),
        ("192.0.2.1:65536", "port '65536'"),
        ("192.0.2.1:-1", "port '-1'"),
        ("2001:db8::1:80", "IPv6 goes in brackets"),
        ("[192.0.2.1]:80", "IPv6 goes in brackets"),
        ("[2001:db8::1]80", "[IPv6]:PORT"),
        ("example.com:80", "not an IP address"),
    ],
)
def test_parse_addr_errors(text, culprit) -> None:
    with pytest.raises(ConfigError) as e:
        parse_addr(text)
    assert culprit in str(e.value) and repr(text) in str(e.value)


def test_unknown_option_creates_nothing(netns: Namespace) -> None:
    before = len(netns._cleanups)
    with pytest.raises(ConfigError, match="unknown socket option 'reuse_port'"):
        netns.tcp_listener("127.0.0.1:80", label="x", reuse_port=True)
    assert len(netns._cleanups) == before and not netns.sockets


def _open_sockets() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:[")
    return n


def test_refused_option_closes_the_socket(netns: Namespace) -> None:
    before = _open_sockets()
    with pytest.raises(SockOptError) as refused:
        netns.tcp_listener("127.0.0.1:80", label="x", local_port_range=(2, 1))
    assert not netns.sockets
    # closed at once, not when the garbage collector gets to it (the error's traceback,
    # which a caller may keep, still references the socket)
    assert refused.traceback and _open_sockets() == before


@pytest.mark.parametrize("label", ["", "two words", "RST", "NONE", "ICMP", "UNLABELLED"])
def test_bad_labels(netns: Namespace, label: str) -> None:
    with pytest.raises(ConfigError, match="label"):
        netns.tcp_listener("127.0.0.1:80", label=label)


def test_server_makes_what_receives_the_protocol(netns: Namespace) -> None:
    t = netns.server("tcp", "127.0.0.1:80", "web")
    u = netns.server("udp", "[::1]:53", "dns")
    assert t.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    assert (u.type, u.family) == (socket.SOCK_DGRAM, socket.AF_INET6)
    with pytest.raises(ConfigError, match="unknown protocol 'sctp'"):
        netns.server("sctp", "127.0.0.1:80", "x")


BOOLEANS = sorted(n for n, o in OPTIONS.items() if o.encode is _bool)


@pytest.mark.parametrize("name", BOOLEANS)
def test_every_boolean_option_can_be_cleared(netns: Namespace, name: str) -> None:
    s = netns.socket("tcp", 6, **{name: True})
    assert get_option(s, name) is True
    set_option(s, name, False)
    assert get_option(s, name) is False


def test_v6only_false_overrides_bindv6only(netns: Namespace) -> None:
    """Issue 13 bug 2: make_socket dropped False, so bindv6only=1's default stayed."""
    netns.sysctl("net.ipv6.bindv6only", 1)
    assert get_option(netns.socket("tcp", 6), "v6only") is True  # the sysctl's default
    assert get_option(netns.socket("tcp", 6, v6only=False), "v6only") is False
    netns.tcp_listener("[::]:80", label="dual", v6only=False)
    netns.udp_socket("[::]:53", label="dual-udp", v6only=False)
    flows = ["tcp 198.18.0.1:1000 -> 192.0.2.1:80", "udp 198.18.0.1:1000 -> 192.0.2.1:53"]
    netns.add_local_route("192.0.2.0/24")
    assert list(netns.probe(flows).values()) == ["dual", "dual-udp"]


def test_v6only_on_an_ipv4_socket(netns: Namespace) -> None:
    netns.socket("tcp", 4, v6only=False)  # what an IPv4 socket is anyway: accepted
    with pytest.raises(ConfigError, match="v6only=True applies to IPv6 sockets only"):
        netns.socket("tcp", 4, v6only=True)
