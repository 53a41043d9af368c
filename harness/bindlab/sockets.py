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
from typing import Any

from bindlab.errors import ConfigError
from bindlab.flow import RESERVED_VERDICTS
from bindlab.netns import NetNS, StashKey
from bindlab.sockopts import (  # noqa: F401 - re-exported: where callers have found them
    IP_BIND_ADDRESS_NO_PORT,
    IP_FREEBIND,
    IP_LOCAL_PORT_RANGE,
    IP_TRANSPARENT,
    OPTIONS,
    SO_BINDTOIFINDEX,
    get_local_port_range,
    get_option,
    set_option,
)

_LABELS: StashKey[dict[int, tuple[str, socket.socket]]] = StashKey("labels")

Address = tuple[str, int]


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
            if value is not None:  # False is a value: it clears what a sysctl default set
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
