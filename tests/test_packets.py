"""The fast-path packet builders make the bytes scapy makes, and the decoder reads scapy's."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6
from scapy.packet import Raw

from harness import packets
from harness.packets import TCP_ACK, TCP_RST, TCP_SYN

V4 = ("198.18.0.1", "192.0.2.10")
V6 = ("2001:db8:ffff::1", "2001:db8:1::5")


def scapy_ip(src: str, dst: str):
    if ":" in src:
        return IPv6(src=src, dst=dst, hlim=64)
    return IP(src=src, dst=dst, ttl=64, id=1, flags="DF")


@pytest.mark.parametrize(("src", "dst"), [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize(
    ("flags", "sflags", "opts"),
    [(TCP_SYN, "S", [("MSS", 1460)]), (TCP_ACK, "A", []), (TCP_RST, "R", [])],
    ids=["syn", "ack", "rst"],
)
def test_tcp_matches_scapy(src, dst, flags, sflags, opts) -> None:
    ours = packets.tcp(
        packets.addr_bytes(src),
        packets.addr_bytes(dst),
        40000,
        80,
        flags,
        seq=7,
        ack=9 if flags & TCP_ACK else 0,
    )
    theirs = bytes(
        scapy_ip(src, dst)
        / TCP(
            sport=40000,
            dport=80,
            flags=sflags,
            seq=7,
            ack=9 if flags & TCP_ACK else 0,
            window=65535,
            options=opts,
        )
    )
    assert ours == theirs


@pytest.mark.parametrize(("src", "dst"), [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("payload", [b"", b"x", b"bindlab-probe:17"])
def test_udp_matches_scapy(src, dst, payload) -> None:
    ours = packets.udp(packets.addr_bytes(src), packets.addr_bytes(dst), 5353, 53, payload)
    theirs = bytes(scapy_ip(src, dst) / UDP(sport=5353, dport=53) / Raw(payload))
    assert ours == theirs


@pytest.mark.parametrize(("src", "dst"), [V4, V6], ids=["ipv4", "ipv6"])
def test_decode_tcp_reply(src, dst) -> None:
    pkt = bytes(scapy_ip(dst, src) / TCP(sport=80, dport=40000, flags="SA", seq=1234, ack=8))
    r = packets.decode(pkt)
    assert r is not None
    assert (r.proto, r.src, r.dst, r.sport, r.dport) == (
        6,
        packets.addr_bytes(dst),
        packets.addr_bytes(src),
        80,
        40000,
    )
    assert r.flags == TCP_SYN | TCP_ACK and r.seq == 1234 and r.ack == 8 and r.icmp is None


def test_decode_icmp_unreachable_quotes_the_original_flow() -> None:
    quoted = scapy_ip(*V4) / UDP(sport=5353, dport=54) / Raw(b"q")
    pkt = bytes(IP(src=V4[1], dst=V4[0]) / ICMP(type=3, code=3) / quoted)
    r = packets.decode(pkt)
    assert r is not None and r.icmp == (3, 3)
    assert (r.proto, r.src, r.sport, r.dport) == (17, packets.addr_bytes(V4[0]), 5353, 54)


def test_decode_icmpv6_unreachable() -> None:
    quoted = scapy_ip(*V6) / UDP(sport=5353, dport=54)
    pkt = bytes(IPv6(src=V6[1], dst=V6[0]) / ICMPv6DestUnreach(code=4) / quoted)
    r = packets.decode(pkt)
    assert (
        r is not None and r.icmp == (1, 4) and r.src == packets.addr_bytes(V6[0]) and r.dport == 54
    )


@pytest.mark.parametrize("junk", [b"", b"\x45", b"\x60" + b"\0" * 10, bytes(IP() / ICMP(type=8))])
def test_decode_ignores_what_it_does_not_know(junk: bytes) -> None:
    assert packets.decode(junk) is None


def test_dissect_gives_scapy_objects() -> None:
    raw = packets.tcp(packets.addr_bytes(V6[0]), packets.addr_bytes(V6[1]), 1, 2, TCP_SYN)
    p = packets.dissect(raw)
    assert p.haslayer(TCP) and p[TCP].flags == "S" and p[IPv6].src == V6[0]
