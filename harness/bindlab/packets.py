"""The probe's fast path: IPv4/IPv6 TCP and UDP packets as bytes, and a minimal reply decoder.

scapy builds a packet in ~0.3 ms, which caps a probe at ~1.5k flows/s; these builders
make the same bytes (``tests/test_packets.py`` checks them against scapy, for any field
values) in 1-2 microseconds: one ``struct`` pack, checksums summed from the field values.
:func:`tcp_fields` reads a plain TCP reply at fixed offsets, :func:`decode` anything else
the probe needs. For other packets, inject scapy packets and dissect replies with
:func:`dissect`.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any, NamedTuple

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_ICMPV6 = 6, 17, 1, 58


_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_IP4_TCP = struct.Struct("!BBHHHBBH4s4sHHIIBBHHH")  # IPv4 header + TCP header without options
_IP6_TCP = struct.Struct("!IHBB16s16sHHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_MSS = struct.pack("!BBH", 2, 4, 1460)
_TCP_HEAD = struct.Struct("!HHIIBB")
# The 16-bit words of our IPv4 header that do not vary: 0x45 0x00 (version, IHL, TOS),
# id 1, 0x40 0x00 (DF), TTL 64 in the high byte of the TTL/protocol word.
_IP4_FIXED_SUM = 0x4500 + 1 + 0x4000 + (64 << 8)


def _fold(total: int) -> int:
    """The Internet checksum (RFC 1071) from a sum of big-endian integers.

    Modulo 0xffff, 0x10000 is 1: a big-endian integer is congruent to the sum of its 16-bit
    words, and so is the ones'-complement sum, which one C-level modulo gives - except that
    a sum of words that is a non-zero multiple of 0xffff is 0xffff ("-0"), whose complement,
    the checksum, is 0 (as scapy computes it; a receiver accepts 0 and 0xffff alike).
    """
    s = total % 0xFFFF
    if s == 0 and total:
        s = 0xFFFF
    return ~s & 0xFFFF


def _int(data: bytes) -> int:
    """``data`` as a big-endian integer, padded to whole 16-bit words."""
    return int.from_bytes(data + b"\0" if len(data) % 2 else data, "big")


def _csum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    return _fold(_int(data))


# The builders below never join bytes to checksum them. Modulo 0xffff, the big-endian
# integer of any run of 16-bit-aligned fields is congruent to the sum of the fields' own
# values (a 32-bit field counts as its value, an address as its integer), so a checksum is
# the fold of a sum of a few Python integers: the same as folding the whole header
# (tests/test_packets.py checks the bytes against scapy, edge cases included).


def tcp(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    flags: int,
    seq: int = 0,
    ack: int = 0,
    window: int = 65535,
    payload: bytes = b"",
) -> bytes:
    """A TCP segment in an IPv4 or IPv6 packet (by address length). SYNs carry MSS 1460."""
    opts = _MSS if flags & TCP_SYN else b""
    tail = opts + payload
    offset = (20 + len(opts)) << 2  # header length in 32-bit words, in the high nibble
    ln = 20 + len(tail)
    addrs = int.from_bytes(src + dst, "big")
    csum = _fold(
        addrs + PROTO_TCP + ln  # pseudo header
        + sport + dport + seq + ack + (offset << 8 | flags) + window  # checksum, urgent: 0
        + (_int(tail) if tail else 0)
    )  # fmt: skip
    if len(src) == 4:
        ip_csum = _fold(_IP4_FIXED_SUM + PROTO_TCP + 20 + ln + addrs)
        hdr = _IP4_TCP.pack(
            0x45, 0, 20 + ln, 1, 0x4000, 64, PROTO_TCP, ip_csum, src, dst,
            sport, dport, seq, ack, offset, flags, window, csum, 0,
        )  # fmt: skip
    else:
        hdr = _IP6_TCP.pack(
            6 << 28, ln, PROTO_TCP, 64, src, dst,
            sport, dport, seq, ack, offset, flags, window, csum, 0,
        )  # fmt: skip
    return hdr + tail if tail else hdr


def udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram in an IPv4 or IPv6 packet (by address length)."""
    ln = 8 + len(payload)
    addrs = int.from_bytes(src + dst, "big")
    csum = _fold(addrs + PROTO_UDP + ln + sport + dport + ln + _int(payload))
    dgram = _UDP.pack(sport, dport, ln, csum or 0xFFFF) + payload  # 0 would mean "none"
    if len(src) == 4:
        ip_csum = _fold(_IP4_FIXED_SUM + PROTO_UDP + 20 + ln + addrs)
        return _IP4.pack(0x45, 0, 20 + ln, 1, 0x4000, 64, PROTO_UDP, ip_csum, src, dst) + dgram
    return _IP6.pack(6 << 28, ln, PROTO_UDP, 64, src, dst) + dgram


# Where a plain TCP packet (IPv4 without options, IPv6 without extension headers) holds
# what a client needs from a reply: the destination address and port, seq and flags.
_TCP4_FIELDS = struct.Struct("!16x4s2xHI5xB")
_TCP6_FIELDS = struct.Struct("!24x16s2xHI5xB")


def tcp_fields(pkt: bytes) -> tuple[bytes, int, int, int] | None:
    """``(dst, dport, seq, flags)`` of a plain IPv4/IPv6 TCP packet, else None.

    The probe's fast path for the replies it reads most (SYN-ACK, RST): the same answer as
    :func:`decode` for those, without building a :class:`Reply`. For anything else (IPv4
    options, IPv6 extension headers, UDP, ICMP) it says None: use :func:`decode`.
    """
    if len(pkt) >= 34 and pkt[0] == 0x45 and pkt[9] == PROTO_TCP:
        return _TCP4_FIELDS.unpack_from(pkt)
    if len(pkt) >= 54 and pkt[0] >> 4 == 6 and pkt[6] == PROTO_TCP:
        return _TCP6_FIELDS.unpack_from(pkt)
    return None


class Reply(NamedTuple):
    """What the probe needs to know of a packet the kernel sent: its 4-tuple, TCP flags and
    seq, or for an ICMP error, the type/code and the 4-tuple of the packet it quotes."""

    proto: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    flags: int = 0
    seq: int = 0
    ack: int = 0
    icmp: tuple[int, int] | None = None  # (type, code) for ICMP errors; 4-tuple is the quoted one


def _l4(proto: int, src: bytes, dst: bytes, l4: bytes) -> Reply | None:
    if proto == PROTO_TCP and len(l4) >= 14:
        sport, dport, seq, ack, _off, flags = _TCP_HEAD.unpack_from(l4)
        return Reply(proto, src, dst, sport, dport, flags, seq, ack)
    if proto == PROTO_UDP and len(l4) >= 4:
        sport, dport = struct.unpack_from("!HH", l4)
        return Reply(proto, src, dst, sport, dport)
    return None


def decode(pkt: bytes) -> Reply | None:
    """Decode an IPv4/IPv6 TCP, UDP or ICMP-error packet; None for anything else."""
    if not pkt:
        return None
    version = pkt[0] >> 4
    if version == 4 and len(pkt) >= 20:
        ihl = (pkt[0] & 0x0F) * 4
        proto, src, dst = pkt[9], pkt[12:16], pkt[16:20]
        body = pkt[ihl:]
        icmp_proto = PROTO_ICMP
    elif version == 6 and len(pkt) >= 40:
        proto, src, dst = pkt[6], pkt[8:24], pkt[24:40]
        body = pkt[40:]
        icmp_proto = PROTO_ICMPV6
    else:
        return None
    if proto == icmp_proto and len(body) >= 8:
        typ, code = body[0], body[1]
        # destination unreachable only (ICMP 3, ICMPv6 1): ICMPv6 3 is time exceeded
        unreachable = typ == (3 if version == 4 else 1)
        inner = decode(body[8:]) if unreachable else None
        if inner is None:
            return None
        return Reply(inner.proto, inner.src, inner.dst, inner.sport, inner.dport, icmp=(typ, code))
    return _l4(proto, src, dst, body)


def addr_bytes(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return ipaddress.ip_address(ip).packed


def dissect(pkt: bytes) -> Any:
    """The packet as a scapy object (IP or IPv6), for humans and for assertions."""
    if pkt[:1] and pkt[0] >> 4 == 6:
        from scapy.layers.inet6 import IPv6

        return IPv6(pkt)
    from scapy.layers.inet import IP

    return IP(pkt)


# A probe's trace: ("in" injected | "out" sent back by the namespace, raw IP packet, time).
TraceEntry = tuple[str, bytes, float]
ARROWS = {"in": "->", "out": "<-"}
LINKTYPE_RAW = 101  # pcap link type: raw IPv4/IPv6 packets, no link header (tcpdump.org)


def summaries(trace: list[TraceEntry]) -> str:
    """A trace as scapy summaries, one packet a line (``-> IP / TCP ... S``)."""
    return "\n".join(f"{ARROWS[d]} {dissect(p).summary()}" for d, p, *_ in trace)


def write_pcap(path: str, trace: list[TraceEntry]) -> None:
    """Write a trace's packets to a pcap file (raw IP link type), in the order they went.

    Injected packets and the namespace's replies share the file; their direction is in the
    addresses (clients are the sources of what was injected). Read it back with
    ``scapy.utils.rdpcap``, tcpdump or Wireshark.
    """
    from scapy.utils import RawPcapWriter

    with RawPcapWriter(path, linktype=LINKTYPE_RAW, sync=False) as w:
        w.write_header(None)
        for _, pkt, *when in trace:
            t = when[0] if when else 0.0
            w.write_packet(
                pkt, sec=int(t), usec=int(t % 1 * 1e6), caplen=len(pkt), wirelen=len(pkt)
            )
