"""Packet injection and capture through a TUN device inside a namespace.

An :class:`Injector` is a TUN link (``IFF_TUN | IFF_NO_PI``): what we write to it arrives
in the namespace as if received on that link, and what the namespace routes into it we
read back. The default injector owns the default routes (IPv4 and IPv6), so a flow may come
from any address that is not local; extra injectors get the client prefixes they are given.

The interface is small: ``send(pkt)`` (scapy packet or bytes), ``recv(timeout)`` (bytes or
None), ``close()``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bindlab import net
from bindlab.errors import HarnessError, SysctlError
from bindlab.netns import StashKey

if TYPE_CHECKING:
    from bindlab.netns import NetNS

DEFAULT_INJECTOR = "blinj0"  # the TUN that owns a namespace's default routes
_INJECTORS: StashKey[dict[str, Injector]] = StashKey("injectors")

TUNSETIFF = 0x400454CA  # <linux/if_tun.h> _IOW('T', 202, int)
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
TXQLEN = 20000  # replies queue here until read; the default (500) drops bulk probes' replies


def injectors(ns: NetNS) -> dict[str, Injector]:
    """The injectors made in ``ns``, by name (the default one is :data:`DEFAULT_INJECTOR`)."""
    return ns.stash.setdefault(_INJECTORS, dict)


class Injector:
    """A TUN link in ``ns`` to inject packets on and read the namespace's replies from."""

    def __init__(
        self,
        ns: NetNS,
        name: str,
        *,
        default_routes: bool = False,
        clients: Sequence[str] = (),
    ) -> None:
        net.check_ifname(name)
        self.ns = ns
        self.name = name
        for prefix in clients:
            net.parse_prefix(prefix, "client prefix")
        with ns.enter():
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.fd: int | None = fd
        ns.defer(self.close)
        injectors(ns)[name] = self
        # struct ifreq: char ifr_name[IFNAMSIZ]; short ifr_flags; (padded to 40 bytes)
        ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
        with ns.enter():  # the device is created in the namespace of the calling thread
            fcntl.ioctl(fd, TUNSETIFF, ifr)
        # No IPv6 link-local address (no DAD, no router solicitations on the wire we read).
        net.sysctl(ns, f"net/ipv6/conf/{name}/addr_gen_mode", 1)
        net.sysctl(ns, f"net/ipv4/conf/{name}/rp_filter", 0)
        net.sysctl(ns, "net.ipv4.conf.all.rp_filter", 0)
        self.index = net.link_index(ns, name)
        ns.ipr.link("set", index=self.index, state="up", txqlen=TXQLEN)
        if default_routes:
            net.add_route(ns, "0.0.0.0/0", name)
            net.add_route(ns, "::/0", name)
            quiet_icmp_limits(ns)
        for prefix in clients:
            net.add_route(ns, prefix, name)

    def send(self, pkt: Any) -> None:
        """Inject one packet: raw IP bytes or a scapy ``IP``/``IPv6`` packet."""
        data = pkt if isinstance(pkt, bytes | bytearray | memoryview) else bytes(pkt)
        os.write(self._fd(), data)

    def recv(self, timeout: float = 0.0) -> bytes | None:
        """The next packet the namespace sent into this link, or None after ``timeout`` s."""
        fd = self._fd()
        try:
            return os.read(fd, 65536)
        except BlockingIOError:
            pass
        if timeout <= 0 or not select.select([fd], [], [], timeout)[0]:
            return None
        with contextlib.suppress(BlockingIOError):
            return os.read(fd, 65536)
        return None

    def exchange(self, pkt: Any, wait: float = 0.1) -> list[Any]:
        """Send ``pkt`` and return what came back within ``wait`` s, dissected by scapy."""
        from bindlab.packets import dissect

        self.drain()
        self.send(pkt)
        out = []
        while (raw := self.recv(wait)) is not None:
            out.append(dissect(raw))
        return out

    def drain(self) -> list[bytes]:
        """Read everything queued now."""
        out = []
        while (pkt := self.recv()) is not None:
            out.append(pkt)
        return out

    def _fd(self) -> int:
        if self.fd is None:
            raise HarnessError(f"{self!r} is closed")
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __repr__(self) -> str:
        return f"<Injector {self.name} in {self.ns!r}>"


def quiet_icmp_limits(ns: NetNS) -> None:
    """Turn off ICMP error rate limits in ``ns`` so bulk probes see every unreachable."""
    for key, value in (
        ("net.ipv4.icmp_ratelimit", 0),
        ("net.ipv6.icmp.ratelimit", 0),
        ("net.ipv4.icmp_msgs_per_sec", 1_000_000),
        ("net.ipv4.icmp_msgs_burst", 1_000_000),
    ):
        with contextlib.suppress(SysctlError):  # the last two are global on older kernels
            net.sysctl(ns, key, value)
