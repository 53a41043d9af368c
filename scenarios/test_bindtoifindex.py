"""SO_BINDTOIFINDEX (Linux 5.0): bind a socket to an interface by index instead of by name.

Claim ("net: introduce SO_BINDTOIFINDEX sockopt"): "It behaves similar to SO_BINDTODEVICE,
but takes a network interface index ... [if the device is renamed] the SO_BINDTODEVICE might
either fail, or worse, it might bind to the wrong device."

Check: two TUN links, in1 and in2, each with its own clients; flows are injected on one
or the other, and the verdict says which socket (if any) received them. A device-bound
socket only sees flows whose ingress device is its own. Rows: the index and the name bind
the same flows; after a rename the index keeps the device while a stale name picks another
device or fails (ENODEV); an unused index is accepted and receives nothing; 0 unbinds; a
bound listener beside an unbound one on the same port. The commit's "devices that are UP
cannot be renamed" no longer holds (6.18 renames a live link): test_live_rename_*.

Flows say ``dev in1`` / ``dev in2``: that names the harness's injector (the TUN's fd),
which keeps its name here even after the kernel's link is renamed.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Any

import pytest
from bindlab import Namespace, SockOptError, net
from bindlab.flow import endpoint
from bindlab.sockets import SO_BINDTOIFINDEX

pytestmark = pytest.mark.requires("SO_BINDTOIFINDEX")

UNUSED_INDEX = 4242


@dataclass(frozen=True)
class Fam:
    v: int
    server: str  # the address listeners bind (inside a local route)
    clients: dict[str, str]  # injector -> a client address routed back through it


FAMILIES = {
    4: Fam(4, "192.0.2.10", {"in1": "198.19.1.1", "in2": "198.19.2.1"}),
    6: Fam(6, "2001:db8:1::10", {"in1": "2001:db8:ffff:1::1", "in2": "2001:db8:ffff:2::1"}),
}
CLIENT_ROUTES = {
    "in1": ["198.19.1.0/24", "2001:db8:ffff:1::/64"],
    "in2": ["198.19.2.0/24", "2001:db8:ffff:2::/64"],
}


def ep(v: int, ip: str, port: int) -> str:
    return endpoint(ip, port)


def flow(a: Fam, proto: str, link: str, port: int = 80, sport: int = 1000) -> str:
    return f"{proto} {ep(a.v, a.clients[link], sport)} -> {ep(a.v, a.server, port)} dev {link}"


def no_socket(proto: str) -> str:
    """The verdict for a flow no socket takes: TCP resets, UDP answers port unreachable."""
    return "RST" if proto == "tcp" else "ICMP"


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def fam(request: pytest.FixtureRequest) -> Fam:
    return FAMILIES[request.param]


@pytest.fixture
def ns(netns: Namespace) -> Namespace:
    """Local routes for the servers and two injector links, in1 and in2."""
    netns.add_local_route("192.0.2.0/24")
    netns.add_local_route("2001:db8:1::/64")
    netns.sysctl("net.ipv6.ip_nonlocal_bind", 1)  # bind() IPv6 addresses of a local route
    for name, routes in CLIENT_ROUTES.items():
        netns.add_injector(name, clients=routes)
    return netns


def serve(
    ns: Namespace, a: Fam, proto: str, label: str, *, port: int = 80, **opts: Any
) -> socket.socket:
    addr = ep(a.v, a.server, port)
    return ns.server(proto, addr, label, **opts)


@pytest.mark.parametrize("option", ["bindtoifindex", "bindtodevice"])
def test_index_and_name_bind_the_same_flows(
    ns: Namespace, fam: Fam, proto: str, option: str
) -> None:
    """The acceptance row: bound to in1, a socket gets in1's flows and not in2's."""
    opts: dict[str, Any] = {option: ns.link_index("in1") if option == "bindtoifindex" else "in1"}
    serve(ns, fam, proto, "in1-only", **opts)
    rows = {
        flow(fam, proto, "in1"): "in1-only",
        flow(fam, proto, "in2"): no_socket(proto),  # arrives on another link: not for it
    }
    assert ns.probe(rows) == rows


def test_getsockopt_round_trip(ns: Namespace, proto: str) -> None:
    """Either option reads back through both: SO_BINDTOIFINDEX gives the index,
    SO_BINDTODEVICE the name; 0 (or the empty name) unbinds."""
    idx = ns.link_index("in1")
    for opts in ({"bindtoifindex": idx}, {"bindtodevice": "in1"}):
        s = ns.socket(proto, 4, **opts)
        assert s.getsockopt(socket.SOL_SOCKET, SO_BINDTOIFINDEX) == idx
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b"in1"
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTOIFINDEX, 0)
        assert s.getsockopt(socket.SOL_SOCKET, SO_BINDTOIFINDEX) == 0
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16) == b""


def test_unused_index_is_accepted_and_receives_nothing(ns: Namespace, fam: Fam, proto: str) -> None:
    """The kernel does not check that the index exists: setsockopt succeeds and the index
    reads back, though it has no name. IPv4 bind() then succeeds and the socket receives
    nothing; IPv6 bind() to a specific address looks the device up and fails (ENODEV),
    while the IPv6 wildcard binds and receives nothing."""
    assert UNUSED_INDEX not in {ns.link_index(n) for n in ("lo", "in1", "in2", "blinj0")}
    s = ns.socket(proto, fam.v, bindtoifindex=UNUSED_INDEX)
    assert s.getsockopt(socket.SOL_SOCKET, SO_BINDTOIFINDEX) == UNUSED_INDEX
    with pytest.raises(OSError) as e:
        s.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16)
    assert e.value.errno == errno.ENODEV
    if fam.v == 6:
        with pytest.raises(OSError) as e:
            serve(ns, fam, proto, "ghost", bindtoifindex=UNUSED_INDEX)
        assert e.value.errno == errno.ENODEV
        ns.label(s, "ghost")
        s.bind(("::", 80))
        if proto == "tcp":
            s.listen()
    else:
        serve(ns, fam, proto, "ghost", bindtoifindex=UNUSED_INDEX)
    rows = {flow(fam, proto, "in1"): no_socket(proto), flow(fam, proto, "in2"): no_socket(proto)}
    assert ns.probe(rows) == rows


def test_negative_index_and_unknown_name_are_refused(ns: Namespace, proto: str) -> None:
    with pytest.raises(SockOptError) as e:
        ns.socket(proto, 4, bindtoifindex=-1)
    assert (e.value.errno, e.value.option) == (errno.EINVAL, "bindtoifindex")
    with pytest.raises(SockOptError) as e:
        ns.socket(proto, 4, bindtodevice="nosuchdev0")
    assert (e.value.errno, e.value.option) == (errno.ENODEV, "bindtodevice")


def test_index_zero_unbinds_even_a_live_socket(ns: Namespace, fam: Fam, proto: str) -> None:
    s = serve(ns, fam, proto, "sock", bindtoifindex=ns.link_index("in1"))
    rows = {
        flow(fam, proto, "in1", sport=1000): "sock",
        flow(fam, proto, "in2", sport=1000): no_socket(proto),
    }
    assert ns.probe(rows) == rows
    s.setsockopt(socket.SOL_SOCKET, SO_BINDTOIFINDEX, 0)  # after bind()/listen()
    rows = {
        flow(fam, proto, "in1", sport=1001): "sock",
        flow(fam, proto, "in2", sport=1001): "sock",
    }
    assert ns.probe(rows) == rows
    s.setsockopt(socket.SOL_SOCKET, SO_BINDTOIFINDEX, ns.link_index("in2"))  # and rebinds
    rows = {
        flow(fam, proto, "in1", sport=1002): no_socket(proto),
        flow(fam, proto, "in2", sport=1002): "sock",
    }
    assert ns.probe(rows) == rows


rename = net.rename_link  # live on 6.x: the link stays up and keeps its client routes


def test_rename_index_keeps_the_device_a_stale_name_takes_another(
    ns: Namespace, fam: Fam, proto: str
) -> None:
    """The race of the commit: the application resolves "in1" -> index, then the links are
    renamed (in1 -> wan0, in2 -> in1). A socket bound by the index keeps receiving the
    original device's flows; the stale name now binds the other device."""
    name, index = "in1", ns.link_index("in1")  # resolved before the rename
    by_index_early = serve(ns, fam, proto, "early-index", port=80, bindtoifindex=index)
    rename(ns, "in1", "wan0")
    rename(ns, "in2", "in1")
    assert ns.link_index("wan0") == index
    serve(ns, fam, proto, "late-index", port=81, bindtoifindex=index)
    serve(ns, fam, proto, "late-name", port=82, bindtodevice=name)
    assert (
        by_index_early.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0")
        == b"wan0"
    )
    # in1/in2 below are the injectors: the original devices, whatever the kernel calls them.
    rows = {
        flow(fam, proto, "in1", 80): "early-index",  # bound before: follows the device
        flow(fam, proto, "in2", 80): no_socket(proto),
        flow(fam, proto, "in1", 81): "late-index",  # the index names the same device
        flow(fam, proto, "in2", 81): no_socket(proto),
        flow(fam, proto, "in1", 82): no_socket(proto),  # the stale name: the wrong device
        flow(fam, proto, "in2", 82): "late-name",
    }
    assert ns.probe(rows) == rows


def test_rename_stale_name_fails_the_index_still_binds(ns: Namespace, fam: Fam, proto: str) -> None:
    """in1 -> wan0 and nothing takes the old name: binding by it fails with ENODEV."""
    name, index = "in1", ns.link_index("in1")
    rename(ns, "in1", "wan0")
    with pytest.raises(SockOptError) as e:
        serve(ns, fam, proto, "late-name", bindtodevice=name)
    assert e.value.errno == errno.ENODEV
    serve(ns, fam, proto, "late-index", bindtoifindex=index)
    rows = {flow(fam, proto, "in1"): "late-index", flow(fam, proto, "in2"): no_socket(proto)}
    assert ns.probe(rows) == rows


ORDERS = {"bound-first": ("bound", "unbound"), "unbound-first": ("unbound", "bound")}


def serve_pair(ns: Namespace, a: Fam, proto: str, order: str, **opts: Any) -> None:
    """A listener bound to in1 by index and an unbound one, same address and port."""
    for which in ORDERS[order]:
        dev = {"bindtoifindex": ns.link_index("in1")} if which == "bound" else {}
        serve(ns, a, proto, which, **dev, **opts)


@pytest.mark.requires("LINK_LIVE_RENAME")
def test_live_rename_of_an_up_link_succeeds(ns: Namespace, fam: Fam, proto: str) -> None:
    """Renaming in1 while it is up (no down/up, its routes stay) is allowed; the socket
    bound by index keeps its flows and the old name is gone."""
    index = ns.link_index("in1")
    serve(ns, fam, proto, "by-index", bindtoifindex=index)
    ns.ipr.link("set", index=index, ifname="wan0")  # the link stays up
    assert ns.link_index("wan0") == index
    with pytest.raises(SockOptError) as e:
        ns.socket(proto, fam.v, bindtodevice="in1")
    assert e.value.errno == errno.ENODEV
    rows = {flow(fam, proto, "in1"): "by-index", flow(fam, proto, "in2"): no_socket(proto)}
    assert ns.probe(rows) == rows


@pytest.mark.parametrize("order", ORDERS)
def test_bound_and_unbound_on_one_port_need_reuse(
    ns: Namespace, fam: Fam, proto: str, order: str
) -> None:
    """Without SO_REUSEPORT (TCP) / SO_REUSEADDR (UDP) the second bind() is refused."""
    with pytest.raises(OSError) as e:
        serve_pair(ns, fam, proto, order)
    assert e.value.errno == errno.EADDRINUSE


@pytest.mark.parametrize("order", ORDERS)
def test_udp_bound_socket_wins_its_device(ns: Namespace, fam: Fam, order: str) -> None:
    """UDP (SO_REUSEADDR): the device-bound socket scores higher on its device, in either
    order; the unbound one gets the other link's flows."""
    serve_pair(ns, fam, "udp", order, reuseaddr=True)
    rows = {flow(fam, "udp", "in1"): "bound", flow(fam, "udp", "in2"): "unbound"}
    assert ns.probe(rows) == rows


# TCP with SO_REUSEPORT: which listener gets in1's flows depends on the creation order and
# the family. The bound and unbound listeners form separate reuseport groups, and the
# listener lookup returns from the first socket in its hash chain that scores, without
# looking further: IPv4 listeners are added at the chain's head (the last one created is
# seen first), IPv6 reuseport listeners at its tail (the first one created is seen first).
# So the device-bound listener wins in1 only when it is seen first.
TCP_REUSEPORT_ROWS = [
    (4, "bound-first", "unbound"),  # the unbound one, created last, shadows the bound one
    (4, "unbound-first", "bound"),
    (6, "bound-first", "bound"),
    (6, "unbound-first", "unbound"),  # the unbound one, created first, shadows the bound one
]


@pytest.mark.parametrize(
    "v, order, in1_winner",
    TCP_REUSEPORT_ROWS,
    ids=[f"ipv{v}-{o}" for v, o, _ in TCP_REUSEPORT_ROWS],
)
def test_tcp_reuseport_bound_listener_wins_only_when_seen_first(
    ns: Namespace, v: int, order: str, in1_winner: str
) -> None:
    a = FAMILIES[v]
    serve_pair(ns, a, "tcp", order, reuseport=True)
    rows = {flow(a, "tcp", "in1", sport=1000 + i): in1_winner for i in range(16)}
    rows |= {flow(a, "tcp", "in2", sport=1000 + i): "unbound" for i in range(16)}
    assert ns.probe(rows) == rows
