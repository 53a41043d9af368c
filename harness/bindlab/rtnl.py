"""The few rtnetlink requests on a namespace's hot path, as raw messages.

Every test makes a namespace, a local route and an injector with its routes: a handful of
netlink requests. pyroute2 (which :mod:`bindlab.net` uses for everything else) spends
~0.25 ms per request in its asyncio loop and message classes; the kernel needs ~0.02 ms.
This module packs those requests with :mod:`struct` and reads the kernel's acknowledgement:

    with Rtnl() as rt:              # opened in the calling thread's network namespace
        rt.link_set(index, up=True, txqlen=20000)
        rt.route_add(AF_INET, packed_dst, 24, oif=1, table=255, rtype=RTN_LOCAL, scope=RT_SCOPE_HOST)

A request the kernel refuses raises :class:`NetlinkError` (an ``OSError`` with its errno).
Layouts and numbers are those of ``<linux/netlink.h>``, ``<linux/rtnetlink.h>`` and
``<linux/if_link.h>``.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Self

# <linux/netlink.h>
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
# <linux/rtnetlink.h>
RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_DST = 1
RTA_OIF = 4
RTA_TABLE = 15
RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255
RTPROT_STATIC = 4  # what pyroute2 and `ip route add proto static` give a route
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_HOST = 254
RTN_UNICAST = 1
RTN_LOCAL = 2
# <linux/if_link.h>, <linux/if.h>
IFLA_TXQLEN = 13
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, proto, scope, type, flags
_IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
_RTATTR = struct.Struct("=HH")


class NetlinkError(OSError):
    """The kernel refused a request; ``errno`` is its answer, the message names the request."""

    def __str__(self) -> str:
        return str(self.strerror)


def _attr(kind: int, payload: bytes) -> bytes:
    size = _RTATTR.size + len(payload)
    return _RTATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


class Rtnl:
    """An rtnetlink socket of the calling thread's network namespace (as it was when made)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, kind: int, flags: int, body: bytes, what: str, reply: int | None = None
    ) -> bytes | None:
        """Send one request and wait for the kernel's acknowledgement (raise if it refuses).

        With ``reply``, return the body of the kernel's answer of that message type."""
        self._seq += 1
        seq = self._seq
        head = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0
        )
        self.sock.send(head + body)
        answer = None
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                size, mtype, _, mseq, _ = _NLMSGHDR.unpack_from(data, off)
                if size < _NLMSGHDR.size:
                    break
                if mseq == seq and mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", data, off + _NLMSGHDR.size)
                    if err:
                        name = errno.errorcode.get(-err, str(-err))
                        raise NetlinkError(-err, f"{what}: {name} ({os.strerror(-err)})")
                    return answer
                if mseq == seq and mtype == reply and answer is None:
                    answer = data[off + _NLMSGHDR.size : off + size]
                off += (size + 3) & ~3

    def link_set(
        self, index: int, *, up: bool | None = None, txqlen: int | None = None, what: str = ""
    ) -> None:
        """``ip link set`` on ``index``: bring it up or down, set its transmit queue length."""
        flags = change = 0
        if up is not None:
            flags, change = (IFF_UP if up else 0), IFF_UP
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)
        if txqlen is not None:
            body += _attr(IFLA_TXQLEN, struct.pack("=I", txqlen))
        self.request(RTM_NEWLINK, 0, body, what or f"link set index {index}")

    def link_flags(self, index: int) -> int:
        """The ``IFF_*`` flags of link ``index`` (``ip link show``)."""
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)
        got = self.request(RTM_GETLINK, 0, body, f"link show index {index}", reply=RTM_NEWLINK)
        if got is None or len(got) < _IFINFOMSG.size:
            raise NetlinkError(errno.EPROTO, f"link show index {index}: no answer")
        return int(_IFINFOMSG.unpack_from(got)[3])

    def addr_add(
        self,
        family: int,
        index: int,
        addr: bytes,
        prefixlen: int,
        *,
        flags: int = 0,
        what: str = "",
    ) -> None:
        """``ip addr add ADDR/PREFIXLEN dev INDEX`` (``flags``: ``IFA_F_*``, e.g. nodad)."""
        body = _IFADDRMSG.pack(family, prefixlen, flags, 0, index)
        body += _attr(IFA_LOCAL, addr) + _attr(IFA_ADDRESS, addr)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, what or "addr add")

    def route_type(self, family: int, dst: bytes, *, oif: int = 0) -> int | None:
        """The type (``RTN_*``) of the route a lookup of ``dst`` finds (``ip route get``), or
        None when there is none (unreachable)."""
        body = _RTMSG.pack(family, len(dst) * 8, 0, 0, 0, 0, 0, 0, 0) + _attr(RTA_DST, dst)
        if oif:
            body += _attr(RTA_OIF, struct.pack("=I", oif))
        try:
            got = self.request(RTM_GETROUTE, 0, body, "route get", reply=RTM_NEWROUTE)
        except NetlinkError:
            return None
        return None if got is None else int(_RTMSG.unpack_from(got)[7])

    def route_add(
        self,
        family: int,
        dst: bytes,
        dst_len: int,
        *,
        oif: int,
        table: int = RT_TABLE_MAIN,
        rtype: int = RTN_UNICAST,
        scope: int = RT_SCOPE_UNIVERSE,
        what: str = "",
    ) -> None:
        """``ip route add`` of ``dst/dst_len`` (packed address) out of link ``oif``."""
        body = _RTMSG.pack(family, dst_len, 0, 0, min(table, 255), RTPROT_STATIC, scope, rtype, 0)
        body += _attr(RTA_DST, dst) + _attr(RTA_OIF, struct.pack("=I", oif))
        body += _attr(RTA_TABLE, struct.pack("=I", table))
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, what or "route add")
