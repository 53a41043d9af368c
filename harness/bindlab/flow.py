"""``Flow``: one packet flow, parsed from and printed as ``PROTO SRC:PORT -> DST:PORT [dev IF]``."""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass

from bindlab.errors import FlowSyntaxError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_FLOW = re.compile(
    r"^\s*(?P<proto>\S+)\s+(?P<src>\S+)\s*->\s*(?P<dst>\S+?)(?:\s+dev\s+(?P<dev>\S+))?\s*$"
)
IFNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")  # what a Linux interface name may be
V4MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"  # ::ffff:0:0/96, as bytes

# The verdicts that are not a socket's label.
RST, ICMP, NONE, UNLABELLED = "RST", "ICMP", "NONE", "UNLABELLED"
RESERVED_VERDICTS = frozenset({RST, ICMP, NONE, UNLABELLED})


def endpoint(ip: object, port: int) -> str:
    """``IP:PORT``, or ``[IPv6]:PORT``: how flows and socket addresses spell an endpoint."""
    text = str(ip)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


@functools.lru_cache(maxsize=65536)
def _ip(host: str) -> IPAddress:
    return ipaddress.ip_address(host)


def _endpoint(text: str, which: str, whole: str) -> tuple[IPAddress, int]:
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise FlowSyntaxError(whole, f"{which} {text!r}: IPv6 needs the form [ADDR]:PORT")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise FlowSyntaxError(whole, f"{which} {text!r} has no :PORT")
    try:
        ip = _ip(host)
    except ValueError:
        raise FlowSyntaxError(whole, f"{which} address {host!r} is not an IP address") from None
    if ip.version == 6 and not text.startswith("["):
        raise FlowSyntaxError(whole, f"{which} {text!r}: put IPv6 addresses in brackets")
    if ip.version == 4 and text.startswith("["):
        raise FlowSyntaxError(whole, f"{which} {text!r}: brackets are for IPv6 only")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise FlowSyntaxError(whole, f"{which} port {port!r} is not in 1-65535")
    return ip, int(port)


@dataclass(frozen=True)
class Flow:
    """A TCP or UDP flow from a client (outside) to the namespace, optionally on link ``dev``."""

    proto: str
    src: IPAddress
    sport: int
    dst: IPAddress
    dport: int
    dev: str | None = None

    @classmethod
    def parse(cls, text: str | Flow) -> Flow:
        """Parse ``tcp 198.18.0.1:40000 -> 192.0.2.10:80`` (``[2001:db8::1]:80`` for IPv6)."""
        if isinstance(text, Flow):
            return text
        if not isinstance(text, str):
            raise FlowSyntaxError(repr(text), "a flow is a string")
        m = _FLOW.match(text)
        if not m:
            raise FlowSyntaxError(text, "does not match the flow syntax")
        proto = m["proto"].lower()
        if proto not in ("tcp", "udp"):
            raise FlowSyntaxError(text, f"protocol {m['proto']!r} is not tcp or udp")
        src, sport = _endpoint(m["src"], "source", text)
        dst, dport = _endpoint(m["dst"], "destination", text)
        if src.version != dst.version:
            raise FlowSyntaxError(text, "source and destination are of different IP versions")
        dev = m["dev"]
        if dev is not None and not IFNAME.match(dev):
            raise FlowSyntaxError(text, f"interface name {dev!r} is not valid")
        return cls(proto, src, sport, dst, dport, dev)

    @functools.cached_property
    def key(self) -> tuple[int, bytes, int, bytes, int]:
        """(IP protocol number, src bytes, sport, dst bytes, dport): the flow's 4-tuple."""
        return (
            6 if self.proto == "tcp" else 17,
            self.src.packed,
            self.sport,
            self.dst.packed,
            self.dport,
        )

    def __hash__(self) -> int:
        return hash((self.key, self.dev))

    @property
    def version(self) -> int:
        return self.src.version

    def __str__(self) -> str:
        _, src, sport, dst, dport = self.key
        if len(src) == 4:  # inet_ntoa spells IPv4 as ipaddress does, several times faster
            text = (
                f"{self.proto} {socket.inet_ntoa(src)}:{sport} -> {socket.inet_ntoa(dst)}:{dport}"
            )
        else:
            text = f"{self.proto} [{self.src}]:{sport} -> [{self.dst}]:{dport}"
        return f"{text} dev {self.dev}" if self.dev else text
