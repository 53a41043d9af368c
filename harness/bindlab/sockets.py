"""Labelled sockets made inside a namespace, with typed socket options.

Every socket that should count in verdicts carries a label; reports use labels, not fds.
Options are given as keywords (``reuseport=True``, ``local_port_range=(40000, 40511)``);
an unknown keyword is a :class:`ConfigError`, a value the kernel refuses a
:class:`SockOptError` naming the option and the errno.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from typing import Any

from bindlab.errors import ConfigError, FeatureMissing, errname
from bindlab.flow import RESERVED_VERDICTS, parse_ip
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
_BY_LABEL: StashKey[dict[str, socket.socket]] = StashKey("socket-by-label")

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
        ip = parse_ip(host)
    except ConfigError as e:
        why = str(e) if "%" in host else f"{host!r} is not an IP address"
        raise ConfigError(f"bad socket address {text!r}: {why}") from None
    if text.startswith("[") != (ip.version == 6):
        raise ConfigError(f"bad socket address {text!r}: IPv6 goes in brackets, IPv4 does not")
    if (
        not (0 < len(port_s) <= 5 and port_s.isascii() and port_s.isdigit())
        or not 0 <= int(port_s) <= 65535
    ):
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


# proto name -> (socket type, IP protocol): what ``socket()`` is called with.
IPPROTO_MPTCP = 262  # <linux/in.h>
PROTOCOLS = {
    "tcp": (socket.SOCK_STREAM, 0),
    "udp": (socket.SOCK_DGRAM, 0),
    "mptcp": (socket.SOCK_STREAM, IPPROTO_MPTCP),
    "sctp": (socket.SOCK_STREAM, socket.IPPROTO_SCTP),  # one-to-one style
}
_MISSING = {errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT, errno.EAFNOSUPPORT}
_KCONFIG = {"mptcp": "CONFIG_MPTCP, or net.mptcp.enabled=0", "sctp": "CONFIG_IP_SCTP"}


class LabSocket(socket.socket):
    """A socket made by :func:`make_socket`: a plain ``socket.socket`` whose ``bind()`` and
    ``connect()`` errors say why (the labelled socket holding a port, how to allow an IPv6
    bind inside a local route, where the routes to outside peers come from)."""

    ns: NetNS | None = None

    def bind(self, address: Any, /) -> None:
        try:
            super().bind(address)
        except OSError as e:
            raise type(e)(
                e.errno, f"bind({_show(address)}): {e.strerror}{_bind_hint(self, address, e)}"
            ) from None

    def connect(self, address: Any, /) -> None:
        try:
            super().connect(address)
        except OSError as e:
            if e.errno != errno.ENETUNREACH:
                raise
            raise type(e)(
                e.errno, f"connect({_show(address)}): {e.strerror}; {NO_ROUTE_HINT}"
            ) from None


NO_ROUTE_HINT = (
    "routes to outside addresses come with the namespace's default injector: use "
    "ns.injector (or probe once) before connect() (it is not made with every namespace: its "
    "TUN device makes closing a namespace ~6x slower)"
)


def _show(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return repr(address)


def _bind_hint(sock: LabSocket, address: Any, e: OSError) -> str:
    ns = sock.ns
    if ns is None or not isinstance(address, tuple):
        return ""
    if e.errno == errno.EADDRINUSE:
        port = address[1]
        holders = [
            f"{lbl!r} ({_show(s.getsockname())})"
            for lbl, s in labelled(ns, sock.type)
            if s is not sock and s.proto == sock.proto and s.getsockname()[1] == port
        ]
        if holders:
            return f": port {port} is held by {', '.join(holders)}"
        return f": port {port} is held by a socket that carries no label"
    if e.errno == errno.EADDRNOTAVAIL and sock.family == socket.AF_INET6:
        from bindlab import net

        ip = str(address[0]).split("%")[0]
        if net.is_local(ns, ip):
            return (
                f": {ip} is local only through a route in table local, and IPv6 (unlike "
                "IPv4) binds only to a configured address there; set freebind=True on the "
                "socket or net.ipv6.ip_nonlocal_bind=1 in the namespace"
            )
    return ""


def make_socket(ns: NetNS, proto: str = "tcp", family: int | str = 4, **opts: Any) -> socket.socket:
    """A socket created inside ``ns`` with ``opts`` applied; closed when ``ns`` closes.

    ``proto`` is ``tcp``, ``udp``, ``mptcp`` or ``sctp`` (SOCK_STREAM, one-to-one); a
    protocol the kernel lacks raises :class:`FeatureMissing` with the precise reason.
    """
    if proto not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {proto!r}: use one of {', '.join(PROTOCOLS)}")
    kind, number = PROTOCOLS[proto]
    fam = _family(family)
    for name in opts:  # validate names before creating anything
        if name not in OPTIONS:
            raise ConfigError(
                f"unknown socket option {name!r}; known: {', '.join(sorted(OPTIONS))}"
            )
    try:
        with ns.enter():
            sock = LabSocket(fam, kind, number)
    except OSError as e:
        if number and e.errno in _MISSING:
            fname = "AF_INET" if fam == socket.AF_INET else "AF_INET6"
            raise FeatureMissing(
                f"{proto.upper()}: socket({fname}, SOCK_STREAM, {number}) -> {errname(e)} on "
                f"{os.uname().release} ({_KCONFIG[proto]})"
            ) from None
        raise
    sock.ns = ns
    try:
        for name, value in opts.items():
            if value is not None:  # False is a value: it clears what a sysctl default set
                set_option(sock, name, value)
    except BaseException:
        sock.close()
        raise
    ns.defer(sock.close)
    return sock


def bind_errno(
    ns: NetNS,
    addr: str,
    proto: str = "tcp",
    label: str | None = None,
    listen: bool = False,
    **opts: Any,
) -> str | None:
    """Make a ``proto`` socket with ``opts``, bind it to ``addr`` (and ``listen``): None if
    every step succeeded (the socket stays open, labelled ``label`` if given), else the
    errno name of the failing step (``"EADDRINUSE"``; the socket is closed).

    One row of a bind-conflict table per call::

        assert bind_errno(ns, "192.0.2.1:80", reuseport=True) is None
        assert bind_errno(ns, "0.0.0.0:80") == "EADDRINUSE"
    """
    family, sa = parse_addr(addr)
    sock = make_socket(ns, proto, family, **opts)
    try:
        sock.bind(sa)
        if listen:
            sock.listen(4096)
    except OSError as e:
        sock.close()
        return errname(e)
    if label is not None:
        label_socket(ns, sock, label)
    return None


def _bind(sock: socket.socket, addr: Address, text: str) -> None:
    if isinstance(sock, LabSocket):
        sock.bind(addr)  # its errors name the address (and the holder)
        return
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
    """Register ``sock`` under ``label`` in ``ns``: one label per socket, and a label names
    one open socket of the namespace (a ConfigError names the other one)."""
    check_label(label)
    by_label = ns.stash.setdefault(_BY_LABEL, dict)
    other = by_label.get(label)
    if (
        other is not None
        and other is not sock
        and other.fileno() != -1
        and labels(ns).get(other.fileno(), ("", None))[1] is other
    ):
        raise ConfigError(
            f"socket label {label!r} is already used in this namespace by "
            f"{_describe(other)}; labels name one socket each"
        )
    labels(ns)[sock.fileno()] = (label, sock)
    by_label[label] = sock
    return sock


def _describe(sock: socket.socket) -> str:
    kind = {v[1] or v[0]: k for k, v in PROTOCOLS.items()}.get(
        sock.proto if sock.proto else sock.type, "socket"
    )
    try:
        return f"a {kind} socket on {_show(sock.getsockname())}"
    except OSError:
        return f"a {kind} socket"


label = label_socket


def _open(ns: NetNS) -> list[tuple[str, socket.socket]]:
    """The open labelled sockets (forgetting the ones closed since they were labelled)."""
    out = []
    table = labels(ns)
    for fd, (name, sock) in list(table.items()):
        if sock.fileno() != fd:  # closed (or fd reused) since it was labelled
            del table[fd]
            continue
        out.append((name, sock))
    return out


def labelled(ns: NetNS, kind: int) -> list[tuple[str, socket.socket]]:
    """The open labelled sockets of ``kind`` (SOCK_STREAM: TCP and MPTCP; SOCK_DGRAM: UDP);
    SCTP sockets never count as TCP."""
    return [
        (name, sock)
        for name, sock in _open(ns)
        if sock.type == kind and sock.proto != socket.IPPROTO_SCTP
    ]
