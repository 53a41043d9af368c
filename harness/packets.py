"""The probe's fast path: IPv4/IPv6 TCP and UDP packets as bytes, and a minimal reply decoder.

scapy builds a packet in ~0.3 ms, which caps a probe at ~1.5k flows/s; these builders
make the same bytes (``tests/test_packets.py`` checks them against scapy field by field)
in a few microseconds. For anything else, inject scapy packets and dissect replies with
:func:`dissect`.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any, NamedTuple

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_ICMPV6 = 6, 17, 1, 58


def _csum(data: bytes) -> int:
    """The Internet checksum (RFC 1071). A big-endian integer is congruent, modulo 0xffff,
    to the ones'-complement sum of its 16-bit words, so one C-level modulo does the sum."""
    if len(data) % 2:
        data += b"\0"
    return ~(int.from_bytes(data, "big") % 0xFFFF) & 0xFFFF


_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_MSS = struct.pack("!BBH", 2, 4, 1460)
_TCP_HEAD = struct.Struct("!HHIIBB")


def _fold(total: int) -> int:
    """Checksum from a big-endian integer sum (see :func:`_csum`)."""
    return ~(total % 0xFFFF) & 0xFFFF


def _wrap(src: bytes, dst: bytes, proto: int, l4: bytes, csum_at: int, zero_ok: bool) -> bytes:
    """Fill the L4 checksum (pseudo header included) at ``csum_at`` and prepend the IP header.

    Concatenating 16-bit-aligned fields only adds their integer values modulo 0xffff, so the
    pseudo-header sum is the sum of the address integers, the protocol and the length.
    """
    ln = len(l4)
    body = l4 + b"\0" if ln % 2 else l4
    c = _fold(
        int.from_bytes(src, "big")
        + int.from_bytes(dst, "big")
        + proto
        + ln
        + int.from_bytes(body, "big")
    )
    if not zero_ok and c == 0:
        c = 0xFFFF  # UDP: a zero checksum means "none"
    l4 = l4[:csum_at] + c.to_bytes(2, "big") + l4[csum_at + 2 :]
    if len(src) == 4:
        hdr = _IP4.pack(0x45, 0, 20 + ln, 1, 0x4000, 64, proto, 0, src, dst)
        hc = _fold(int.from_bytes(hdr, "big"))
        return hdr[:10] + hc.to_bytes(2, "big") + hdr[12:] + l4
    return _IP6.pack(6 << 28, ln, proto, 64, src, dst) + l4


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
    seg = _TCP.pack(sport, dport, seq, ack, (5 + len(opts) // 4) << 4, flags, window, 0, 0)
    return _wrap(src, dst, PROTO_TCP, seg + opts + payload, 16, True)


def udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram in an IPv4 or IPv6 packet (by address length)."""
    dgram = _UDP.pack(sport, dport, 8 + len(payload), 0) + payload
    return _wrap(src, dst, PROTO_UDP, dgram, 6, False)


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
        inner = decode(body[8:]) if typ in (3, 1) else None  # dest unreachable (v4 3, v6 1)
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
