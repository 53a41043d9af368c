"""Injection with scapy packets: what we send arrives as received on the TUN, replies dissect."""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest
from bindlab import Namespace
from bindlab.errors import ConfigError
from bindlab.inject import DEFAULT_INJECTOR
from bindlab.netns import current_netns_fd, setns
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6
from scapy.packet import Raw


def test_scapy_handshake_ipv4(netns: Namespace) -> None:
    netns.add_local_route("192.0.2.0/24")
    lst = netns.tcp_listener("192.0.2.1:80", label="web")
    inj = netns.injector
    (synack,) = inj.exchange(
        IP(src="198.18.0.1", dst="192.0.2.1") / TCP(sport=999, dport=80, flags="S", seq=100)
    )
    assert synack[TCP].flags == "SA" and synack[TCP].ack == 101 and synack[IP].dst == "198.18.0.1"
    ack = IP(src="198.18.0.1", dst="192.0.2.1") / TCP(
        sport=999, dport=80, flags="A", seq=101, ack=synack[TCP].seq + 1
    )
    assert inj.exchange(ack) == []
    lst.settimeout(1)
    conn, peer = lst.accept()
    assert peer == ("198.18.0.1", 999)
    conn.send(b"hi")
    (data,) = [p for p in (inj.recv(1),) if p is not None]
    assert IP(data)[Raw].load == b"hi"
    conn.close()


def test_scapy_rst_and_icmp_ipv6(netns: Namespace) -> None:
    netns.add_local_route("2001:db8:1::/64")
    base = IPv6(src="2001:db8:ffff::1", dst="2001:db8:1::1")
    netns.injector  # noqa: B018 - routes first
    (rst,) = netns.injector.exchange(base / TCP(sport=5, dport=81, flags="S"))
    assert "R" in str(rst[TCP].flags)
    (unreach,) = netns.injector.exchange(base / UDP(sport=5, dport=81) / Raw(b"x"))
    assert unreach.haslayer(ICMPv6DestUnreach) and unreach[ICMPv6DestUnreach].code == 4  # port


def test_scapy_udp_reaches_socket_and_icmp_dissects(netns: Namespace) -> None:
    netns.add_local_route("192.0.2.0/24")
    s = netns.udp_socket("192.0.2.1:53", label="dns")
    base = IP(src="198.18.0.1", dst="192.0.2.1")
    assert netns.injector.exchange(base / UDP(sport=7, dport=53) / Raw(b"query")) == []
    s.settimeout(1)
    assert s.recvfrom(100) == (b"query", ("198.18.0.1", 7))
    (err,) = netns.injector.exchange(base / UDP(sport=7, dport=54) / Raw(b"q"))
    assert err[ICMP].type == 3 and err[ICMP].code == 3


def test_reply_leaves_on_the_injector_of_its_route(netns: Namespace) -> None:
    """Replies follow the routing table: clients of an extra injector's prefix are answered there."""
    netns.add_local_route("192.0.2.0/24")
    netns.tcp_listener("192.0.2.1:80", label="web")
    in1 = netns.add_injector("in1", clients=["198.19.0.0/16"])
    syn = IP(src="198.19.0.1", dst="192.0.2.1") / TCP(sport=5, dport=80, flags="S")
    (synack,) = in1.exchange(syn)
    assert synack[TCP].flags == "SA"
    assert netns.injector.recv(0.05) is None  # nothing leaked out of the default injector


def test_closing_the_namespace_leaves_its_tun_to_the_kernel() -> None:
    """The TUN is persistent: when the namespace closes, closing the TUN's fd does not
    unregister the device (which waits for RTNL and an RCU grace period); the namespace's
    own asynchronous teardown removes it. A cleanup registered before the injector runs
    after the injector's close (last first) and still finds the device."""
    ns = Namespace()
    seen: list[int] = []

    def look() -> None:  # the namespace is closing: enter() refuses, setns by hand
        saved = current_netns_fd()
        try:
            setns(ns.fd)
            seen.append(socket.if_nametoindex(DEFAULT_INJECTOR))
        finally:
            setns(saved)
            os.close(saved)

    ns.defer(look)
    index = ns.injector.index
    ns.close()
    assert seen == [index]


def test_an_injector_closed_by_hand_takes_its_device_along(netns: Namespace) -> None:
    """Closed while its namespace lives, an injector's device goes (and its routes)."""
    inj = netns.add_injector("in1", clients=["198.19.0.0/16"])
    inj.close()
    with pytest.raises(ConfigError, match="no link named 'in1'"):
        netns.link_index("in1")
    assert "198.19.0.0/16" not in netns.run(["ip", "-4", "route"]).stdout


def test_injector_devices_go_with_their_namespaces_not_to_the_host() -> None:
    """A device the kernel cannot delete with its namespace would be moved to the host's
    (as ``devN``): persistent TUNs must not be. Namespace teardown is asynchronous (tens of
    ms), so the host's links are watched for a while after the last close."""
    before = sorted(name for _, name in socket.if_nameindex())
    for _ in range(20):
        with Namespace() as ns:
            ns.injector  # noqa: B018
            ns.add_injector("in1")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert sorted(name for _, name in socket.if_nameindex()) == before
        time.sleep(0.05)


def test_probe_gives_a_listener_its_own_linger_back(netns: Namespace) -> None:
    """probe() lends labelled listeners SO_LINGER 0 so that the connections they accept
    inherit it and close with an RST; the listener's own setting comes back after."""
    netns.add_local_route("192.0.2.0/24")
    lst = netns.tcp_listener("192.0.2.1:80", label="web")
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5))
    flow = "tcp 198.18.0.1:999 -> 192.0.2.1:80"
    assert netns.probe([flow]) == {flow: "web"}
    assert struct.unpack("ii", lst.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)) == (1, 5)
    # and the probe's connection is gone (reset), in no state at all: only the listener
    sockets = netns.run(["ss", "-Htna"]).stdout.splitlines()
    assert [line.split()[0] for line in sockets] == ["LISTEN"], sockets
