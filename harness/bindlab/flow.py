"""``Flow``: one packet flow, parsed from and printed as ``PROTO SRC:PORT -> DST:PORT [dev IF]``.

Also the strict spellings every module parses with: :func:`parse_ip`, :func:`parse_network`,
:func:`parse_interface` (no IPv6 zone ids, prefix lengths as ``/LEN`` only) and the one
interface-name rule, :func:`check_ifname`. Parsing is linear in the input and bounded
(:data:`MAX_FLOW_LEN`).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass

from bindlab.errors import ConfigError, FlowSyntaxError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
MAX_FLOW_LEN = 256  # the longest flow, IPv6 both ends and dev, is ~110 characters
IFNAMSIZ = 16  # <linux/if.h>, including the NUL
# What bindlab lets an interface name be: the kernel's dev_valid_name() also refuses '.',
# '..', '/', ':' and whitespace (':' is an address label, not a link); ASCII only here.
IFNAME = re.compile(rf"[A-Za-z0-9_.-]{{1,{IFNAMSIZ - 1}}}\Z")
_PREFIXLEN = re.compile(r"[0-9]{1,3}\Z")
V4MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"  # ::ffff:0:0/96, as bytes

# The verdicts that are not a socket's label.
RST, ICMP, NONE, UNLABELLED = "RST", "ICMP", "NONE", "UNLABELLED"
RESERVED_VERDICTS = frozenset({RST, ICMP, NONE, UNLABELLED})


def endpoint(ip: object, port: int) -> str:
    """``IP:PORT``, or ``[IPv6]:PORT``: how flows and socket addresses spell an endpoint."""
    text = str(ip)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def check_ifname(name: str) -> str:
    """``name`` if it is a valid interface name (the one rule for links, injectors, ``dev``)."""
    if not isinstance(name, str) or not IFNAME.match(name) or name in {".", ".."}:
        raise ConfigError(
            f"invalid interface name {name!r}: 1-{IFNAMSIZ - 1} characters of "
            "[A-Za-z0-9_.-], not '.' or '..'"
        )
    return name


def _no_zone(text: str) -> None:
    if "%" in text:
        raise ConfigError(
            "IPv6 zone ids ('%IFACE') are not supported; "
            "give the address without it (flows pick their link with 'dev IFACE')"
        )


@functools.lru_cache(maxsize=65536)
def parse_ip(text: str) -> IPAddress:
    """An IPv4 or IPv6 address; refuses zone ids (``fe80::1%eth0``) with a ConfigError."""
    _no_zone(text)
    try:
        return ipaddress.ip_address(text)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_cidr(text: str) -> None:
    _no_zone(text)
    _, slash, length = text.partition("/")
    if slash and not _PREFIXLEN.match(length):
        raise ConfigError(
            f"prefix length {length!r}: give an integer after '/' (like /24), "
            "not a netmask or hostmask"
        )


def parse_network(text: str, strict: bool = True) -> IPNetwork:
    """``ADDR/LEN`` (or a bare address) as a network; ``strict``: host bits must be clear.

    Stricter than :func:`ipaddress.ip_network`: no zone id, no netmask/hostmask notation."""
    _check_cidr(text)
    try:
        return ipaddress.ip_network(text, strict=strict)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def parse_interface(text: str) -> IPInterface:
    """``ADDR/LEN`` as an address on a link (host bits allowed), as strict as :func:`parse_network`."""
    _check_cidr(text)
    try:
        return ipaddress.ip_interface(text)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _port(text: str) -> int | None:
    """The port ``text`` spells (ASCII digits, at most 5 of them), or None."""
    return int(text) if 0 < len(text) <= 5 and text.isascii() and text.isdigit() else None


def _endpoint(text: str, which: str, whole: str) -> tuple[IPAddress, int]:
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise FlowSyntaxError(whole, f"{which} {text!r}: IPv6 needs the form [ADDR]:PORT")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise FlowSyntaxError(whole, f"{which} {text!r} has no :PORT")
    if "%" in host:
        raise FlowSyntaxError(whole, f"{which} {text!r}: IPv6 zone ids are not supported")
    try:
        ip = parse_ip(host)
    except ValueError:
        raise FlowSyntaxError(whole, f"{which} address {host!r} is not an IP address") from None
    if ip.version == 6 and not text.startswith("["):
        raise FlowSyntaxError(whole, f"{which} {text!r}: put IPv6 addresses in brackets")
    if ip.version == 4 and text.startswith("["):
        raise FlowSyntaxError(whole, f"{which} {text!r}: brackets are for IPv6 only")
    number = _port(port)
    if number is None or not 1 <= number <= 65535:
        shown = port if len(port) <= 12 else f"{port[:8]}... ({len(port)} characters)"
        raise FlowSyntaxError(whole, f"{which} port {shown!r} is not in 1-65535")
    return ip, number


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
        if len(text) > MAX_FLOW_LEN:
            raise FlowSyntaxError(
                text, f"{len(text)} characters; a flow has at most {MAX_FLOW_LEN}"
            )
        # Plain string operations, no backtracking regex: linear in len(text).
        head = text.split(None, 1)
        left, arrow, right = head[1].partition("->") if len(head) == 2 else ("", "", "")
        src_text, tail = left.strip(), right.split()
        if not arrow or not src_text or len(src_text.split()) != 1 or not tail:
            raise FlowSyntaxError(text, "does not match the flow syntax")
        if "->" in right:
            raise FlowSyntaxError(text, "more than one '->'")
        if len(tail) not in (1, 3) or (len(tail) == 3 and tail[1] != "dev"):
            raise FlowSyntaxError(text, f"unexpected {' '.join(tail[1:])!r} after the destination")
        proto = head[0].lower()
        if proto not in ("tcp", "udp"):
            raise FlowSyntaxError(text, f"protocol {head[0]!r} is not tcp or udp")
        src, sport = _endpoint(src_text, "source", text)
        dst, dport = _endpoint(tail[0], "destination", text)
        if src.version != dst.version:
            raise FlowSyntaxError(text, "source and destination are of different IP versions")
        dev = tail[2] if len(tail) == 3 else None
        if dev is not None:
            try:
                check_ifname(dev)
            except ConfigError as e:
                raise FlowSyntaxError(text, f"dev: {e}") from None
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
