"""Bindings as bytes: the LPM-trie key and value layouts of ``dispatch.bpf.c``, and the
precedence rule they encode (also as a pure-Python reference model).

Key (24 bytes, ``struct key``): ``u32 prefixlen`` counting the bits that follow, then
``u8 protocol, u8 IP version, u16 port`` (host order, 0 = any port; 32 bits, always matched
in full, so ``::/0`` never matches IPv4 flows), then the address as 16 bytes, IPv4 mapped to
``::ffff:a.b.c.d``. An IPv4 /24 is therefore ``prefixlen = 32 + 96 + 24``. Port before address means one trie lookup cannot weigh port
against prefix length, so the program looks up twice (the flow's port, then port 0) and keeps
the port-specific match unless the any-port one has a strictly longer prefix.

Value (36 bytes, ``struct binding``): ``u32 counter`` (slot in ``lookups``), ``u32
prefixlen`` (address bits, IPv6 terms), ``u32 nsockets``, ``u32 flags`` (for
``bpf_sk_assign``), ``u32 ifindex`` (0: any ingress interface), ``u32 sockets[4]`` (slots
in the SOCKMAP, tried in order: the first still open is assigned).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from bindlab.errors import ConfigError
from bindlab.flow import V4MAPPED_PREFIX, parse_network

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

PROTOCOLS = {"tcp": 6, "udp": 17}  # <netinet/in.h> IPPROTO_*
PROTO_NAMES = {v: k for k, v in PROTOCOLS.items()}
ANY_PORT = 0
MAX_FALLBACK = 4  # sockets per binding (must match MAX_SOCKETS_PER_BINDING in the C)
KEY = struct.Struct("=IBBH16s")
VALUE = struct.Struct(f"=IIIII{MAX_FALLBACK}I")
HEADER_BITS = 32  # protocol, IP version, port


def parse_proto(proto: str) -> int:
    if proto not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {proto!r}: use 'tcp' or 'udp'")
    return PROTOCOLS[proto]


def parse_prefix(text: str | Network) -> Network:
    """``192.0.2.0/24``, ``2001:db8::/32`` or a bare address (a /32 or /128)."""
    if isinstance(text, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return text
    try:  # the one strict prefix rule: no zone id, no netmask/hostmask notation
        return parse_network(text, strict=True)
    except ValueError as e:
        hint = ""
        if "host bits set" in str(e):
            hint = f"; did you mean {parse_network(text, strict=False)}?"
        raise ConfigError(f"bad prefix {text!r}: {e}{hint}") from None
    except TypeError:
        raise ConfigError(f"bad prefix {text!r}: expected a string like 192.0.2.0/24") from None


def parse_port(port: int | None) -> int:
    """A port 1-65535, or 0 / None for any port."""
    if port is None:
        return ANY_PORT
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"bad port {port!r}: use 1-65535, or 0/None for any port")
    return port


def v6_bits(net: Network) -> int:
    """The prefix length in the trie's address space (IPv4 lives under ::ffff:0:0/96)."""
    return net.prefixlen + (96 if net.version == 4 else 0)


def _addr16(ip: Address) -> bytes:
    return V4MAPPED_PREFIX + ip.packed if ip.version == 4 else ip.packed


@dataclass(frozen=True, order=True)
class Rule:
    """What a binding matches: protocol, destination prefix and port (0 = any port)."""

    proto: str
    prefix: Network
    port: int = ANY_PORT

    @classmethod
    def make(cls, proto: str, prefix: str | Network, port: int | None) -> Rule:
        parse_proto(proto)
        return cls(proto, parse_prefix(prefix), parse_port(port))

    def key(self) -> bytes:
        """The trie key this rule is stored under."""
        return KEY.pack(
            HEADER_BITS + v6_bits(self.prefix),
            PROTOCOLS[self.proto],
            self.prefix.version,
            self.port,
            _addr16(self.prefix.network_address),
        )

    def matches(self, proto: str, dst: Address, dport: int) -> bool:
        return (
            proto == self.proto
            and dst.version == self.prefix.version
            and dst in self.prefix
            and self.port in (ANY_PORT, dport)
        )

    def __str__(self) -> str:
        port = "*" if self.port == ANY_PORT else str(self.port)
        return f"{self.proto} {self.prefix} port {port}"


def decode_key(key: bytes) -> Rule:
    """The rule a trie key stands for (inverse of :meth:`Rule.key`)."""
    bits, proto, version, port, addr = KEY.unpack(key)
    alen = bits - HEADER_BITS
    if version == 4:
        net: Network = ipaddress.IPv4Network((addr[12:], alen - 96))
    else:
        net = ipaddress.IPv6Network((addr, alen))
    return Rule(PROTO_NAMES.get(proto, str(proto)), net, port)


def lookup_key(proto: str, dst: Address, dport: int) -> bytes:
    """The full-length key the program builds for a flow (``dport`` 0: the any-port lookup)."""
    return KEY.pack(HEADER_BITS + 128, PROTOCOLS[proto], dst.version, dport, _addr16(dst))


def encode_value(
    counter: int, prefix: Network, sockets: Iterable[int], flags: int = 0, ifindex: int = 0
) -> bytes:
    slots = list(sockets)
    if not 1 <= len(slots) <= MAX_FALLBACK:
        raise ConfigError(f"a binding holds 1 to {MAX_FALLBACK} sockets, got {len(slots)}")
    padded = slots + [0] * (MAX_FALLBACK - len(slots))
    return VALUE.pack(counter, v6_bits(prefix), len(slots), flags, ifindex, *padded)


def decode_value(value: bytes) -> tuple[int, int, list[int]]:
    """(counter slot, prefix length in trie terms, socket slots)."""
    counter, bits, n, _flags, _ifindex, *slots = VALUE.unpack(value)
    return counter, bits, slots[:n]


def select(rules: Iterable[Rule], proto: str, dst: Address, dport: int) -> Rule | None:
    """The rule the dispatcher picks for a flow: longest prefix; at equal length, the
    specific port over any port. The reference model of ``dispatch.bpf.c``."""
    best: Rule | None = None
    for r in rules:
        if not r.matches(proto, dst, dport):
            continue
        if best is None or (r.prefix.prefixlen, r.port != ANY_PORT) > (
            best.prefix.prefixlen,
            best.port != ANY_PORT,
        ):
            best = r
    return best
