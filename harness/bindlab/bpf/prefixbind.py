"""SO_BINDTOPREFIX: a socket bound to an IP prefix and a port (Cloudflare's 2016 patch,
never merged; sk_lookup replaced it). Emulated with the dispatcher, or through the real
``setsockopt`` of a patched kernel, so that the same scenarios are a conformance suite.

The rules (from the RFC):

- two prefix-bound sockets of one protocol and port *conflict* when their networks, masked
  with the shorter of the two prefix lengths, are equal (one contains the other): the second
  ``bind`` fails with ``EADDRINUSE``;
- unless both set SO_REUSEPORT: then sockets on the *same* prefix form a reuseport group and
  flows spread between them. The emulation binds every member of a group to one address
  and port with SO_REUSEPORT, so they are a real kernel reuseport group: the dispatcher
  assigns one member and the kernel's reuseport selection (hash of the 4-tuple, or an
  attached reuseport program) picks the receiver, exactly as for ordinary reuseport sockets.
  Nested (different) prefixes that both set SO_REUSEPORT are allowed and the longer prefix
  wins for its addresses: the emulation's choice, which the RFC does not spell out.

Emulated sockets bind to (network address, ephemeral port) with IP_FREEBIND, out of the way
of ordinary binds; ``getsockname()`` shows that, not the prefix.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bindlab.bpf.dispatcher import Dispatcher, label_of, sk_lookup
from bindlab.bpf.keys import MAX_FALLBACK, Network, parse_prefix
from bindlab.errors import ConfigError, SockOptError
from bindlab.sockopts import IP_FREEBIND, IPV6_FREEBIND

if TYPE_CHECKING:
    from bindlab.netns import NetNS

_PROTO = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}


@dataclass(frozen=True)
class PrefixSocket:
    """A socket bound to a prefix: what the conflict rule compares."""

    proto: str
    prefix: Network
    port: int
    reuseport: bool
    label: str = "?"
    sock: socket.socket | None = None

    def __str__(self) -> str:
        return f"{self.label} ({self.proto} {self.prefix} port {self.port})"


def overlaps(a: Network, b: Network) -> bool:
    """The networks are equal once both are masked with the shorter prefix length."""
    if a.version != b.version:
        return False
    shift = a.max_prefixlen - min(a.prefixlen, b.prefixlen)
    return int(a.network_address) >> shift == int(b.network_address) >> shift


def conflicts(new: PrefixSocket, old: PrefixSocket) -> bool:
    """Would binding ``new`` fail with EADDRINUSE because of ``old``?"""
    return (
        new.proto == old.proto
        and new.port == old.port
        and overlaps(new.prefix, old.prefix)
        and not (new.reuseport and old.reuseport)
    )


def in_use(new: PrefixSocket, old: PrefixSocket) -> OSError:
    """The EADDRINUSE error naming both sockets."""
    why = "" if new.reuseport or old.reuseport else "; both need SO_REUSEPORT to share"
    if new.reuseport != old.reuseport:
        why = f"; {new.label if not new.reuseport else old.label} lacks SO_REUSEPORT"
    return OSError(errno.EADDRINUSE, f"bind_to_prefix {new}: address in use: overlaps {old}{why}")


def prefix_struct(net: Network) -> bytes:
    """The option value given to a patched kernel: the network address (network byte order)
    then a u8 prefix length, padded like the C struct (``{__be32 net; __u8 plen;}``, 8 bytes;
    IPv6 ``{struct in6_addr net; __u8 plen;}``, 20 bytes)."""
    if net.version == 4:
        return struct.pack("=4sB3x", net.network_address.packed, net.prefixlen)
    return struct.pack("=16sB3x", net.network_address.packed, net.prefixlen)


def _describe(sock: socket.socket, prefix: str | Network, port: int, label: str) -> PrefixSocket:
    proto = _PROTO.get(sock.type)
    if proto is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise ConfigError(f"bind_to_prefix: {label} is not a TCP or UDP inet socket")
    net = parse_prefix(prefix)
    want = socket.AF_INET if net.version == 4 else socket.AF_INET6
    if sock.family != want:
        raise ConfigError(
            f"bind_to_prefix: prefix {net} needs an IPv{net.version} socket; {label} is not"
        )
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ConfigError(f"bind_to_prefix {label}: port {port!r} is not in 1-65535")
    reuse = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
    return PrefixSocket(proto, net, port, reuse, label, sock)


def _members(d: Dispatcher, rec: PrefixSocket) -> list[socket.socket]:
    same = (rec.proto, rec.prefix, rec.port)
    return [
        r.sock for r in d.prefix_bound if (r.proto, r.prefix, r.port) == same and r.sock is not None
    ]


def _prune(d: Dispatcher) -> None:
    """Forget closed sockets; rebind (or unbind) the groups they were in."""
    gone = [r for r in d.prefix_bound if r.sock is None or r.sock.fileno() < 0]
    if not gone:
        return
    d.prefix_bound[:] = [r for r in d.prefix_bound if r not in gone]
    for g in {(r.proto, r.prefix, r.port): r for r in gone}.values():
        left = _members(d, g)
        if left:
            d.bind(g.proto, g.prefix, g.port, *left[:MAX_FALLBACK])
        else:
            d.unbind(g.proto, g.prefix, g.port)


def emulate(
    d: Dispatcher, sock: socket.socket, prefix: str | Network, port: int, backlog: int = 4096
) -> socket.socket:
    """Bind ``sock`` to ``prefix`` and ``port`` (and listen, for TCP) through ``d``."""
    rec = _describe(sock, prefix, port, label_of(d.ns, sock))
    _prune(d)
    for old in d.prefix_bound:
        if conflicts(rec, old):
            raise in_use(rec, old)
    group = _members(d, rec)
    if rec.prefix.version == 4:
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
    # Same prefix, all with SO_REUSEPORT: join the group's kernel reuseport group.
    sock.bind(group[0].getsockname() if group else (str(rec.prefix.network_address), 0))
    if rec.proto == "tcp":
        sock.listen(backlog)
    d.bind(rec.proto, rec.prefix, rec.port, *[*group, sock][:MAX_FALLBACK])
    d.prefix_bound.append(rec)
    return sock


def setsockopt_bind(
    optname: int, sock: socket.socket, prefix: str | Network, port: int, backlog: int = 4096
) -> socket.socket:
    """The real thing on a patched kernel: ``setsockopt(SOL_SOCKET, optname, prefix)``, then
    ``bind`` to the wildcard address and ``port`` (and listen, for TCP)."""
    net = parse_prefix(prefix)
    try:
        sock.setsockopt(socket.SOL_SOCKET, optname, prefix_struct(net))
    except OSError as e:  # ENOPROTOOPT: this kernel lacks the option
        raise SockOptError(f"SO_BINDTOPREFIX ({optname})", e.errno or 0, str(net)) from None
    anyaddr = "0.0.0.0" if net.version == 4 else "::"
    sock.bind((anyaddr, port))
    if sock.type == socket.SOCK_STREAM:
        sock.listen(backlog)
    return sock


def bind_to_prefix(
    target: Dispatcher | NetNS,
    sock: socket.socket,
    prefix: str | Network,
    port: int,
    *,
    optname: int | None = None,
    backlog: int = 4096,
) -> socket.socket:
    """Bind ``sock`` (made in the namespace, options such as SO_REUSEPORT already set) to
    ``prefix`` and ``port``, and listen if TCP. Emulated on ``target``'s dispatcher, or with
    ``optname`` the real socket option of a patched kernel. A conflict raises ``OSError``
    with ``EADDRINUSE``."""
    if optname is not None:
        return setsockopt_bind(optname, sock, prefix, port, backlog)
    d = target if isinstance(target, Dispatcher) else sk_lookup(target)
    return emulate(d, sock, prefix, port, backlog)
