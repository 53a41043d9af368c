"""Labelled sockets made inside a namespace, with typed socket options.

Every socket that should count in verdicts carries a label; reports use labels, not fds.
Options are given as keywords (``reuseport=True``, ``local_port_range=(40000, 40511)``);
an unknown keyword is a :class:`ConfigError`, a value the kernel refuses a
:class:`SockOptError` naming the option and the errno.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bindlab.errors import ConfigError, SockOptError
from bindlab.flow import RESERVED_VERDICTS
from bindlab.netns import NetNS, StashKey

_LABELS: StashKey[dict[int, tuple[str, socket.socket]]] = StashKey("labels")

# Numbers Python 3.11 lacks, from <linux/in.h> and <asm-generic/socket.h>.
IP_FREEBIND = 15
IP_TRANSPARENT = 19
IP_BIND_ADDRESS_NO_PORT = 24
IP_LOCAL_PORT_RANGE = 51
SO_BINDTOIFINDEX = 62
IPV6_FREEBIND = 78
IPV6_TRANSPARENT = 75

Address = tuple[str, int]


@dataclass(frozen=True)
class Option:
    """One typed socket option: its name, level/number, and how a Python value is encoded."""

    name: str
    level: int
    optname: int
    encode: Callable[[Any], bytes | int]
    level6: int | None = None  # a different (level, optname) for AF_INET6 sockets
    optname6: int | None = None


def _bool(v: Any) -> int:
    if not isinstance(v, bool):
        raise ConfigError(f"expected True/False, got {v!r}")
    return int(v)


def _port_range(v: Any) -> bytes:
    if (
        not isinstance(v, tuple | list)
        or len(v) != 2
        or not all(isinstance(p, int) and not isinstance(p, bool) for p in v)
    ):
        raise ConfigError(f"expected (lo, hi) ports, got {v!r}")
    lo, hi = v
    if not (0 <= lo <= 65535 and 0 <= hi <= 65535):
        raise ConfigError(f"port out of range in {v!r}: ports are 0-65535")
    # u32 hi << 16 | lo; may exceed INT_MAX, so pass bytes rather than a C int.
    return struct.pack("I", hi << 16 | lo)


def _ifname(v: Any) -> bytes:
    if not isinstance(v, str) or not 0 < len(v) < 16:
        raise ConfigError(f"expected an interface name (1-15 chars), got {v!r}")
    return v.encode()


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ConfigError(f"expected an integer, got {v!r}")
    return v


IP, IP6, SOL = socket.IPPROTO_IP, socket.IPPROTO_IPV6, socket.SOL_SOCKET
OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        Option("reuseaddr", SOL, socket.SO_REUSEADDR, _bool),
        Option("reuseport", SOL, socket.SO_REUSEPORT, _bool),
        Option("freebind", IP, IP_FREEBIND, _bool, IP6, IPV6_FREEBIND),
        Option("transparent", IP, IP_TRANSPARENT, _bool, IP6, IPV6_TRANSPARENT),
        # IP_* options below apply to AF_INET6 sockets too (the kernel handles them at SOL_IP).
        Option("bind_address_no_port", IP, IP_BIND_ADDRESS_NO_PORT, _bool),
        Option("local_port_range", IP, IP_LOCAL_PORT_RANGE, _port_range),
        Option("bindtodevice", SOL, socket.SO_BINDTODEVICE, _ifname),
        Option("bindtoifindex", SOL, SO_BINDTOIFINDEX, _int),
        Option("v6only", IP6, socket.IPV6_V6ONLY, _bool),
    )
}


def set_option(sock: socket.socket, name: str, value: Any) -> None:
    """Apply one typed option; raise ConfigError (bad name/value) or SockOptError (kernel)."""
    opt = OPTIONS.get(name)
    if opt is None:
        raise ConfigError(f"unknown socket option {name!r}; known: {', '.join(sorted(OPTIONS))}")
    try:
        encoded = opt.encode(value)
    except ConfigError as e:
        raise ConfigError(f"socket option {name}: {e}") from None
    level, optname = opt.level, opt.optname
    if sock.family == socket.AF_INET6 and opt.level6 is not None:
        level, optname = opt.level6, opt.optname6 or optname
    try:
        sock.setsockopt(level, optname, encoded)
    except OSError as e:
        raise SockOptError(name, e.errno or 0, value) from None


def get_local_port_range(sock: socket.socket) -> tuple[int, int]:
    """getsockopt(IP_LOCAL_PORT_RANGE) as (lo, hi)."""
    v = struct.unpack("I", sock.getsockopt(IP, IP_LOCAL_PORT_RANGE, 4))[0]
    return v & 0xFFFF, v >> 16


def parse_addr(text: str) -> tuple[int, Address]:
    """``IP:PORT`` or ``[IPv6]:PORT`` -> (family, (ip, port)), naming the culprit on error."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(f"bad socket address {text!r}: expected IP:PORT or [IPv6]:PORT")
    if text.startswith("["):
        host, sep, port_s = text[1:].partition("]:")
        if not sep:
            raise ConfigError(f"bad socket address {text!r}: expected [IPv6]:PORT")
    else:
        host, _, port_s = text.rpartition(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"bad socket address {text!r}: {host!r} is not an IP address") from None
    if text.startswith("[") != (ip.version == 6):
        raise ConfigError(f"bad socket address {text!r}: IPv6 goes in brackets, IPv4 does not")
    if not (port_s.isascii() and port_s.isdigit()) or not 0 <= int(port_s) <= 65535:
        raise ConfigError(f"bad socket address {text!r}: port {port_s!r} is not in 0-65535")
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    return family, (str(ip), int(port_s))


def _family(family: int | str) -> int:
    table = {4: socket.AF_INET, 6: socket.AF_INET6, "4": socket.AF_INET, "6": socket.AF_INET6}
    if family in (socket.AF_INET, socket.AF_INET6):
        return int(family)
    if family not in table:
        raise ConfigError(f"unknown address family {family!r}: use 4 or 6")
    return table[family]


def make_socket(ns: NetNS, proto: str = "tcp", family: int | str = 4, **opts: Any) -> socket.socket:
    """A socket created inside ``ns`` with ``opts`` applied; closed when ``ns`` closes."""
    kinds = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
    if proto not in kinds:
        raise ConfigError(f"unknown protocol {proto!r}: use 'tcp' or 'udp'")
    fam = _family(family)
    for name in opts:  # validate names before creating anything
        if name not in OPTIONS:
            raise ConfigError(
                f"unknown socket option {name!r}; known: {', '.join(sorted(OPTIONS))}"
            )
    with ns.enter():
        sock = socket.socket(fam, kinds[proto])
    try:
        for name, value in opts.items():
            if value is not None and value is not False:
                set_option(sock, name, value)
    except BaseException:
        sock.close()
        raise
    ns.defer(sock.close)
    return sock


def _bind(sock: socket.socket, addr: Address, text: str) -> None:
    try:
        sock.bind(addr)
    except OSError as e:
        raise type(e)(e.errno, f"bind({text}): {e.strerror}") from None


def tcp_listener(
    ns: NetNS, addr: str, label: str, backlog: int = 4096, **opts: Any
) -> socket.socket:
    """A labelled TCP listener on ``addr``."""
    family, sa = parse_addr(addr)
    sock = make_socket(ns, "tcp", family, **opts)
    _bind(sock, sa, addr)
    sock.listen(backlog)
    return label_socket(ns, sock, label)


def udp_socket(
    ns: NetNS, addr: str, label: str, connect: str | None = None, **opts: Any
) -> socket.socket:
    """A labelled UDP socket bound to ``addr`` and, with ``connect``, connected to a peer."""
    family, sa = parse_addr(addr)
    peer = parse_addr(connect)[1] if connect is not None else None
    sock = make_socket(ns, "udp", family, **opts)
    _bind(sock, sa, addr)
    if peer is not None:
        sock.connect(peer)
    return label_socket(ns, sock, label)


def server(ns: NetNS, proto: str, addr: str, label: str, **opts: Any) -> socket.socket:
    """A labelled TCP listener or UDP socket on ``addr``: what receives ``proto`` flows."""
    if proto == "tcp":
        return tcp_listener(ns, addr, label, **opts)
    if proto == "udp":
        return udp_socket(ns, addr, label, **opts)
    raise ConfigError(f"unknown protocol {proto!r}: use 'tcp' or 'udp'")


def check_label(label: str) -> str:
    if not isinstance(label, str) or not label or not label.isprintable() or " " in label:
        raise ConfigError(f"bad socket label {label!r}: a non-empty word without spaces")
    if label in RESERVED_VERDICTS:
        raise ConfigError(f"socket label {label!r} is reserved for verdicts")
    return label


def labels(ns: NetNS) -> dict[int, tuple[str, socket.socket]]:
    """``{fd: (label, socket)}`` of ``ns``'s labelled sockets (closed with ``ns``)."""
    table = ns.stash.get(_LABELS)
    if table is None:
        table = ns.stash.setdefault(_LABELS, dict)
        ns.defer(_close_all, table)
    return table


def _close_all(table: dict[int, tuple[str, socket.socket]]) -> None:
    for _label, sock in table.values():
        with contextlib.suppress(OSError):
            sock.close()
    table.clear()


def label_socket(ns: NetNS, sock: socket.socket, label: str) -> socket.socket:
    """Register ``sock`` under ``label`` in ``ns`` (one label per socket)."""
    check_label(label)
    labels(ns)[sock.fileno()] = (label, sock)
    return sock


label = label_socket


def labelled(ns: NetNS, kind: int) -> list[tuple[str, socket.socket]]:
    """The open labelled sockets of ``kind`` (SOCK_STREAM or SOCK_DGRAM)."""
    out = []
    table = labels(ns)
    for fd, (name, sock) in list(table.items()):
        if sock.fileno() != fd:  # closed (or fd reused) since it was labelled
            del table[fd]
            continue
        if sock.type == kind:
            out.append((name, sock))
    return out
