"""Typed socket options: a Python value in, the kernel's bytes out, and back.

``set_option(sock, "reuseport", True)``, ``get_option(sock, "local_port_range")``. Every
option is named once in :data:`OPTIONS` with its level/number (a different pair for
``AF_INET6`` sockets where the kernel has one), an encoder and a decoder. An unknown name or
a bad value is a :class:`ConfigError`; a value the kernel refuses is a
:class:`SockOptError` naming the option and the errno. Booleans take both values.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bindlab.errors import ConfigError, SockOptError

# Numbers Python 3.11 lacks, from <linux/in.h>, <linux/in6.h> and <asm-generic/socket.h>.
IP_FREEBIND = 15
IP_TRANSPARENT = 19
IP_BIND_ADDRESS_NO_PORT = 24
IP_LOCAL_PORT_RANGE = 51
SO_ATTACH_REUSEPORT_CBPF = 51
SO_ATTACH_REUSEPORT_EBPF = 52
SO_BINDTOIFINDEX = 62
SO_DETACH_REUSEPORT_BPF = 68
IPV6_FREEBIND = 78
IPV6_TRANSPARENT = 75


class SockFilter(ctypes.Structure):
    """``struct sock_filter`` (<linux/filter.h>): one classic BPF instruction."""

    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class SockFprog(ctypes.Structure):
    """``struct sock_fprog``: a classic BPF program (length + pointer); keeps its array."""

    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]


@dataclass(frozen=True)
class Option:
    """One typed socket option: its name, level/number, and how a Python value is encoded
    (``encode``) and a ``getsockopt`` result decoded (``decode``; None: write-only)."""

    name: str
    level: int
    optname: int
    encode: Callable[[Any], Any]
    decode: Callable[[bytes], Any] | None
    size: int = 4  # getsockopt buffer length
    level6: int | None = None  # a different (level, optname) for AF_INET6 sockets
    optname6: int | None = None
    ipv6_only: bool = False  # meaningful on AF_INET6 sockets only (v6only)


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


INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # what an int-valued option can carry (C int)


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ConfigError(f"expected an integer, got {v!r}")
    if not INT_MIN <= v <= INT_MAX:  # the kernel gets a C int: anything wider cannot be sent
        raise ConfigError(f"{v} does not fit a C int ({INT_MIN} to {INT_MAX})")
    return v


def _cbpf(v: Any) -> SockFprog:
    """A classic BPF program: a sequence of ``(code, jt, jf, k)`` (see :mod:`bindlab.cbpf`)."""
    if (
        not isinstance(v, Sequence)
        or not v
        or not all(isinstance(i, tuple | list) and len(i) == 4 for i in v)
    ):
        raise ConfigError(f"expected a classic BPF program [(code, jt, jf, k), ...], got {v!r}")
    insns = (SockFilter * len(v))(*(SockFilter(*map(int, i)) for i in v))
    prog = SockFprog(len(v), ctypes.cast(insns, ctypes.POINTER(SockFilter)))
    prog._keep = insns  # alive for the setsockopt
    return prog


def _dec_bool(b: bytes) -> bool:
    return struct.unpack("i", b[:4])[0] != 0


def _dec_int(b: bytes) -> int:
    return int(struct.unpack("i", b[:4])[0])


def _dec_range(b: bytes) -> tuple[int, int]:
    v = struct.unpack("I", b[:4])[0]
    return v & 0xFFFF, v >> 16


def _dec_ifname(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode()


IP, IP6, SOL = socket.IPPROTO_IP, socket.IPPROTO_IPV6, socket.SOL_SOCKET
B = _dec_bool
OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        Option("reuseaddr", SOL, socket.SO_REUSEADDR, _bool, B),
        Option("reuseport", SOL, socket.SO_REUSEPORT, _bool, B),
        Option("freebind", IP, IP_FREEBIND, _bool, B, 4, IP6, IPV6_FREEBIND),
        Option("transparent", IP, IP_TRANSPARENT, _bool, B, 4, IP6, IPV6_TRANSPARENT),
        # IP_* options below apply to AF_INET6 sockets too (the kernel handles them at SOL_IP).
        Option("bind_address_no_port", IP, IP_BIND_ADDRESS_NO_PORT, _bool, B),
        Option("local_port_range", IP, IP_LOCAL_PORT_RANGE, _port_range, _dec_range),
        Option("bindtodevice", SOL, socket.SO_BINDTODEVICE, _ifname, _dec_ifname, 16),
        Option("bindtoifindex", SOL, SO_BINDTOIFINDEX, _int, _dec_int),
        Option("v6only", IP6, socket.IPV6_V6ONLY, _bool, B, ipv6_only=True),
        # SO_ATTACH_REUSEPORT_CBPF: which socket of the reuseport group (by index) gets a flow.
        Option("reuseport_cbpf", SOL, SO_ATTACH_REUSEPORT_CBPF, _cbpf, None),
    )
}


def _lookup(name: str) -> Option:
    opt = OPTIONS.get(name)
    if opt is None:
        raise ConfigError(f"unknown socket option {name!r}; known: {', '.join(sorted(OPTIONS))}")
    return opt


def _where(sock: socket.socket, opt: Option) -> tuple[int, int]:
    if sock.family == socket.AF_INET6 and opt.level6 is not None:
        return opt.level6, opt.optname6 or opt.optname
    return opt.level, opt.optname


def set_option(sock: socket.socket, name: str, value: Any) -> None:
    """Apply one typed option; raise ConfigError (bad name/value) or SockOptError (kernel).

    Booleans are set to both values (``v6only=False`` clears ``net.ipv6.bindv6only=1``'s
    default); ``v6only=False`` on an IPv4 socket is a no-op, ``True`` a ConfigError.
    """
    opt = _lookup(name)
    try:
        encoded = opt.encode(value)
    except ConfigError as e:
        raise ConfigError(f"socket option {name}: {e}") from None
    if opt.ipv6_only and sock.family != socket.AF_INET6:
        if value is False:  # an IPv4 socket is that already
            return
        raise ConfigError(f"socket option {name}={value!r} applies to IPv6 sockets only")
    try:
        sock.setsockopt(*_where(sock, opt), encoded)
    except OSError as e:
        raise SockOptError(name, e.errno or 0, value) from None


def get_option(sock: socket.socket, name: str) -> Any:
    """Read one typed option back as the Python value :func:`set_option` takes.

    ``v6only`` of an IPv4 socket reads ``False``; write-only options are a ConfigError.
    """
    opt = _lookup(name)
    if opt.decode is None:
        raise ConfigError(f"socket option {name} is write-only: the kernel cannot read it back")
    if opt.ipv6_only and sock.family != socket.AF_INET6:
        return False
    try:
        return opt.decode(sock.getsockopt(*_where(sock, opt), opt.size))
    except OSError as e:
        raise SockOptError(name, e.errno or 0) from None


def get_local_port_range(sock: socket.socket) -> tuple[int, int]:
    """getsockopt(IP_LOCAL_PORT_RANGE) as (lo, hi)."""
    lo, hi = get_option(sock, "local_port_range")
    return int(lo), int(hi)
