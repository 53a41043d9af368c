"""The fast-path packet builders make the bytes scapy makes, and the decoder reads scapy's."""

from __future__ import annotations

import ipaddress

import pytest
from bindlab import packets
from bindlab.packets import TCP_ACK, TCP_RST, TCP_SYN
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
)
from scapy.packet import Raw

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


# -- any field values: the arithmetic checksums against scapy's ------------------------

ADDRS = {
    4: st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
    6: st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
}
PORT = st.integers(0, 65535)
U32 = st.integers(0, 2**32 - 1)


@st.composite
def endpoints(draw: st.DrawFn) -> tuple[str, str]:
    version = draw(st.sampled_from([4, 6]))
    return draw(ADDRS[version]), draw(ADDRS[version])


@settings(max_examples=150, deadline=None)
@given(
    ends=endpoints(),
    sport=PORT,
    dport=PORT,
    flags=st.integers(0, 0xFF),
    seq=U32,
    ack=U32,
    window=PORT,
    payload=st.binary(max_size=40),
)
def test_tcp_matches_scapy_for_any_fields(ends, sport, dport, flags, seq, ack, window, payload):
    src, dst = ends
    ours = packets.tcp(
        packets.addr_bytes(src),
        packets.addr_bytes(dst),
        sport,
        dport,
        flags,
        seq=seq,
        ack=ack,
        window=window,
        payload=payload,
    )
    seg = TCP(
        sport=sport,
        dport=dport,
        flags=flags,
        seq=seq,
        ack=ack,
        window=window,
        options=[("MSS", 1460)] if flags & TCP_SYN else [],
    )
    assert ours == bytes(scapy_ip(src, dst) / seg / Raw(payload))


@settings(max_examples=100, deadline=None)
@given(ends=endpoints(), sport=PORT, dport=PORT, payload=st.binary(max_size=40))
def test_udp_matches_scapy_for_any_fields(ends, sport, dport, payload):
    src, dst = ends
    ours = packets.udp(packets.addr_bytes(src), packets.addr_bytes(dst), sport, dport, payload)
    assert ours == bytes(scapy_ip(src, dst) / UDP(sport=sport, dport=dport) / Raw(payload))


def _field(pkt: bytes, at: int) -> int:
    return int.from_bytes(pkt[at : at + 2], "big")


@pytest.mark.parametrize(("src", "dst"), [V4, V6], ids=["ipv4", "ipv6"])
def test_checksum_of_a_sum_that_is_minus_zero(src, dst) -> None:
    """A ones'-complement sum of 0xffff ("-0") makes checksum 0 in TCP; UDP sends 0xffff."""
    s, d = packets.addr_bytes(src), packets.addr_bytes(dst)
    at = 20 if len(s) == 4 else 40  # the L4 header
    # A field holding the checksum of the packet with that field at 0 makes the sum 0xffff.
    c = _field(packets.tcp(s, d, 40000, 80, TCP_ACK, seq=0, ack=9), at + 16)
    ours = packets.tcp(s, d, 40000, 80, TCP_ACK, seq=c, ack=9)
    assert _field(ours, at + 16) == 0
    assert ours == bytes(
        scapy_ip(src, dst) / TCP(sport=40000, dport=80, flags="A", seq=c, ack=9, window=65535)
    )
    c = _field(packets.udp(s, d, 0, 53, b"xy"), at + 6)
    ours = packets.udp(s, d, c, 53, b"xy")
    assert _field(ours, at + 6) == 0xFFFF
    assert ours == bytes(scapy_ip(src, dst) / UDP(sport=c, dport=53) / Raw(b"xy"))


def test_ipv4_header_checksum_zero() -> None:
    s, d = packets.addr_bytes("198.18.0.0"), packets.addr_bytes(V4[1])
    c = _field(packets.tcp(s, d, 1, 2, TCP_RST), 10)
    src = str(ipaddress.IPv4Address(int.from_bytes(s, "big") + c))  # low word: c
    ours = packets.tcp(packets.addr_bytes(src), d, 1, 2, TCP_RST)
    assert _field(ours, 10) == 0
    assert ours == bytes(scapy_ip(src, V4[1]) / TCP(sport=1, dport=2, flags="R", window=65535))


# -- the reply fast path ------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    ends=endpoints(),
    sport=PORT,
    dport=PORT,
    flags=st.integers(0, 0xFF),
    seq=U32,
    payload=st.binary(max_size=8),
)
def test_tcp_to_agrees_with_decode(ends, sport, dport, flags, seq, payload) -> None:
    src, dst = ends
    pkt = packets.tcp(
        packets.addr_bytes(src), packets.addr_bytes(dst), sport, dport, flags, seq, 5, 7, payload
    )
    r = packets.decode(pkt)
    assert r is not None
    assert packets.tcp_fields(pkt) == (r.dst, r.dport, r.seq, r.flags)


@pytest.mark.parametrize(
    "pkt",
    [
        bytes(IP(src=V4[1], dst=V4[0], options=b"\x01\x01\x01\x00") / TCP(flags="SA")),
        bytes(IPv6(src=V6[1], dst=V6[0]) / IPv6ExtHdrDestOpt() / TCP(flags="SA")),
        bytes(IP(src=V4[1], dst=V4[0]) / UDP()),
        bytes(IP(src=V4[1], dst=V4[0]) / ICMP(type=3, code=3) / IP(src=V4[0], dst=V4[1]) / TCP()),
        bytes(IPv6(src=V6[1], dst=V6[0]) / ICMPv6DestUnreach() / IPv6() / TCP()),
        bytes(IP(src=V4[1], dst=V4[0]) / TCP(flags="SA"))[:33],
        b"",
    ],
    ids=["ipv4-options", "ipv6-ext-header", "udp", "icmp", "icmpv6", "short", "empty"],
)
def test_tcp_to_leaves_the_rest_to_decode(pkt: bytes) -> None:
    assert packets.tcp_fields(pkt) is None


def test_decode_reads_tcp_behind_ipv4_options() -> None:
    pkt = bytes(
        IP(src=V4[1], dst=V4[0], options=b"\x01\x01\x01\x00")
        / TCP(sport=80, dport=40000, flags="SA", seq=77)
    )
    r = packets.decode(pkt)
    assert r is not None and (r.dst, r.dport, r.seq, r.flags) == (
        packets.addr_bytes(V4[0]),
        40000,
        77,
        TCP_SYN | TCP_ACK,
    )


@pytest.mark.parametrize(
    "pkt",
    [
        # ICMP errors other than destination unreachable, each quoting a real flow: the
        # probe must not read them as a closed port (found by mutmut on packets.decode)
        bytes(IP(src=V4[1], dst=V4[0]) / ICMP(type=11, code=0) / scapy_ip(*V4) / UDP(dport=54)),
        bytes(IP(src=V4[1], dst=V4[0]) / ICMP(type=1, code=0) / scapy_ip(*V4) / UDP(dport=54)),
        bytes(IPv6(src=V6[1], dst=V6[0]) / ICMPv6TimeExceeded() / scapy_ip(*V6) / UDP(dport=54)),
        bytes(IPv6(src=V6[1], dst=V6[0]) / ICMPv6PacketTooBig() / scapy_ip(*V6) / UDP(dport=54)),
        # an unreachable whose quote is cut short of the ports
        bytes(IP(src=V4[1], dst=V4[0]) / ICMP(type=3, code=3) / bytes(scapy_ip(*V4))[:20]),
    ],
    ids=["v4-time-exceeded", "v4-type-1", "v6-time-exceeded", "v6-too-big", "v4-short-quote"],
)
def test_decode_reads_only_destination_unreachable_as_icmp(pkt: bytes) -> None:
    assert packets.decode(pkt) is None
