"""IP_LOCAL_PORT_RANGE (Linux 6.3): a per-socket ephemeral port range.

Claim ("inet: Add IP_LOCAL_PORT_RANGE socket option"): "The new option can be used to clamp
down the ephemeral port range for each socket individually ... only to narrow down the
per-netns local port range."

Check: in a namespace whose ``net.ipv4.ip_local_port_range`` is 16 ports, sockets with a
per-socket range bind(ADDR, 0) (or connect()) until the kernel refuses; each row asserts the
exact set of ports handed out and the errno that ends it. Every test runs for TCP and UDP,
IPv4 and IPv6 (the IPv4 sysctl governs both families).
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

import pytest
from bindlab import Namespace, SockOptError
from bindlab.sockets import IP_BIND_ADDRESS_NO_PORT, IP_LOCAL_PORT_RANGE, get_local_port_range

pytestmark = pytest.mark.requires("IP_LOCAL_PORT_RANGE")

NETNS_LO, NETNS_HI = 40000, 40015
LOOPBACK = {4: "127.0.0.1", 6: "::1"}
SERVER_PORT = 80  # outside every range below: a listener never takes an ephemeral port


def pack(lo: int, hi: int) -> bytes:
    """The option's value as the commit packs it: u32 hi << 16 | lo, host byte order."""
    return struct.pack("I", hi << 16 | lo)


@pytest.fixture(
    params=[("tcp", 4), ("tcp", 6), ("udp", 4), ("udp", 6)],
    ids=["tcp-ipv4", "tcp-ipv6", "udp-ipv4", "udp-ipv6"],
)
def kind(request: pytest.FixtureRequest) -> tuple[str, int]:
    return request.param


@pytest.fixture
def ns(netns: Namespace) -> Namespace:
    """A namespace with a 16-port ephemeral range, 40000-40015."""
    netns.sysctl("net.ipv4.ip_local_port_range", f"{NETNS_LO} {NETNS_HI}")
    return netns


def bind_until_refused(
    ns: Namespace, kind: tuple[str, int], rng: tuple[int, int] | None, limit: int = 64
) -> tuple[list[int], int | None]:
    """bind(loopback, 0) fresh sockets (with ``rng`` set) until the kernel refuses.

    Returns the ports handed out, in order, and the errno of the refusal (None if
    ``limit`` binds all succeeded). The sockets are closed before returning.
    """
    proto, fam = kind
    held: list[socket.socket] = []
    refused = None
    try:
        for _ in range(limit):
            s = ns.socket(proto, fam)
            held.append(s)
            if rng is not None:
                s.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, pack(*rng))
            try:
                s.bind((LOOPBACK[fam], 0))
            except OSError as e:
                refused = e.errno
                held.pop().close()
                break
        return [s.getsockname()[1] for s in held], refused
    finally:
        for s in held:
            s.close()


def test_commit_example_binds_in_range_until_eaddrinuse(netns: Namespace, kind: Any) -> None:
    """The commit's example, in the namespace's default range: 40000-40511, 512 ports."""
    assert netns.sysctl("net.ipv4.ip_local_port_range").split() == ["32768", "60999"]
    ports, refused = bind_until_refused(netns, kind, (40000, 40511), limit=600)
    assert sorted(ports) == list(range(40000, 40512))  # every port once, none outside
    assert refused == errno.EADDRINUSE


# (per-socket range, ports bind(ADDR, 0) hands out) with the netns range at 40000-40015.
RANGE_ROWS = [
    ((40004, 40007), range(40004, 40008)),  # inside: narrows
    ((30000, 39999), range(40000, 40016)),  # below the netns range: ignored, not clamped
    ((50000, 59999), range(40000, 40016)),  # above: ignored, not clamped
    ((39990, 40003), range(40000, 40004)),  # overlaps the low end: the intersection
    ((40010, 40100), range(40010, 40016)),  # overlaps the high end: the intersection
    ((40005, 40005), range(40005, 40006)),  # a single port
    ((0, 40000), range(40000, 40001)),  # lo 0 means "netns low": a single port, 40000
    ((40015, 0), range(40015, 40016)),  # hi 0 means "netns high": a single port, 40015
    ((0, 0), range(40000, 40016)),  # (0, 0) is "unset": the netns range
]


@pytest.mark.parametrize(
    "rng, expected", RANGE_ROWS, ids=[f"{lo}-{hi}" for (lo, hi), _ in RANGE_ROWS]
)
def test_socket_range_only_narrows_netns_range(
    ns: Namespace, kind: Any, rng: tuple[int, int], expected: range
) -> None:
    ports, refused = bind_until_refused(ns, kind, rng)
    assert sorted(ports) == list(expected), f"range {rng}: got ports {sorted(ports)}"
    assert refused == errno.EADDRINUSE


def test_getsockopt_round_trip_and_unset(ns: Namespace, kind: Any) -> None:
    s = ns.socket(*kind)
    assert get_local_port_range(s) == (0, 0)  # never set
    # Stored as given, even outside the netns range (it is applied at port selection).
    s.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, pack(12345, 54321))
    assert get_local_port_range(s) == (12345, 54321)
    s.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, pack(0, 0))
    assert get_local_port_range(s) == (0, 0)  # unset
    typed = ns.socket(*kind, local_port_range=(40001, 40002))  # the harness's typed option
    assert get_local_port_range(typed) == (40001, 40002)


@pytest.mark.parametrize(
    "value, why",
    [
        (pack(40222, 40111), "lo > hi: an empty range"),
        (struct.pack("H", 40000), "2 bytes: too few"),
        (struct.pack("Q", 40444 << 16 | 40333), "8 bytes: too many"),
    ],
    ids=["lo-gt-hi", "2-bytes", "8-bytes"],
)
def test_invalid_values_are_einval(ns: Namespace, kind: Any, value: bytes, why: str) -> None:
    s = ns.socket(*kind)
    with pytest.raises(OSError) as e:
        s.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, value)
    assert e.value.errno == errno.EINVAL, why
    assert get_local_port_range(s) == (0, 0)  # a refused value leaves the option unset


def test_typed_option_reports_the_kernels_einval(ns: Namespace, kind: Any) -> None:
    with pytest.raises(SockOptError) as e:
        ns.socket(*kind, local_port_range=(40003, 40002))
    assert (e.value.errno, e.value.option) == (errno.EINVAL, "local_port_range")


@pytest.fixture
def server(ns: Namespace, kind: Any) -> tuple[str, int]:
    """Where connect() goes: a TCP listener on loopback, or (UDP) any loopback port."""
    proto, fam = kind
    if proto == "tcp":
        host = f"[{LOOPBACK[fam]}]" if fam == 6 else LOOPBACK[fam]
        ns.tcp_listener(f"{host}:{SERVER_PORT}", label="srv")
    return LOOPBACK[fam], SERVER_PORT


def test_connect_without_bind_picks_from_socket_range(
    ns: Namespace, kind: Any, server: tuple[str, int]
) -> None:
    """connect() autobinds in the per-socket range; to one destination 4 ports give 4
    connections, then TCP says EADDRNOTAVAIL and UDP EAGAIN."""
    proto, fam = kind
    ports: list[int] = []
    refused = None
    for _ in range(8):
        s = ns.socket(proto, fam, local_port_range=(40004, 40007))
        try:
            s.connect(server)
        except OSError as e:
            refused = e.errno
            break
        ports.append(s.getsockname()[1])
    assert sorted(ports) == [40004, 40005, 40006, 40007]
    assert refused == (errno.EADDRNOTAVAIL if proto == "tcp" else errno.EAGAIN)


def test_late_bind_with_bind_address_no_port(
    ns: Namespace, kind: Any, server: tuple[str, int]
) -> None:
    """With IP_BIND_ADDRESS_NO_PORT, bind(ADDR, 0) leaves port 0; connect() picks one in the
    per-socket range (the selftest's late_bind)."""
    proto, fam = kind
    s = ns.socket(proto, fam, local_port_range=(40008, 40011))
    s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    s.bind((LOOPBACK[fam], 0))
    assert s.getsockname()[:2] == (LOOPBACK[fam], 0)
    s.connect(server)
    assert s.getsockname()[0] == LOOPBACK[fam]
    assert 40008 <= s.getsockname()[1] <= 40011
