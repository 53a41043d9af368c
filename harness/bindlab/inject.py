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
import socket
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
TUNSETPERSIST = 0x400454CB  # <linux/if_tun.h> _IOW('T', 203, int)
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
        ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)  # struct ifreq
        with ns.enter():  # the device is created in the namespace of the calling thread
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            self.fd: int | None = fd
            ns.defer(self.close)
            injectors(ns)[name] = self
            fcntl.ioctl(fd, TUNSETIFF, ifr)
            # Persistent: closing the fd leaves the device to the namespace's own teardown,
            # which the kernel runs asynchronously and batched, instead of unregistering it
            # synchronously on close (RTNL and an RCU grace period: ~20 ms per namespace).
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
            self.index = socket.if_nametoindex(name)
            # No IPv6 link-local address (no DAD, no router solicitations on the wire we read).
            _write_sysctls(
                (f"net/ipv6/conf/{name}/addr_gen_mode", 1),
                (f"net/ipv4/conf/{name}/rp_filter", 0),
                ("net/ipv4/conf/all/rp_filter", 0),
            )
            if default_routes:
                _quiet_icmp_limits()
        net.rtnetlink(ns).link_set(self.index, up=True, txqlen=TXQLEN, what=f"link set {name} up")
        if default_routes:
            net.add_route(ns, "0.0.0.0/0", name)
            net.add_route(ns, "::/0", name)
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
        """Close the TUN. While its namespace is open the device goes with it, as the user
        asked; when the namespace itself is closing, the persistent device is left to the
        namespace's own (asynchronous) teardown instead of being unregistered here."""
        if self.fd is not None:
            if not self.ns.closed:
                with contextlib.suppress(OSError):
                    fcntl.ioctl(self.fd, TUNSETPERSIST, 0)
            os.close(self.fd)
            self.fd = None

    def __repr__(self) -> str:
        return f"<Injector {self.name} in {self.ns!r}>"


def _write_sysctls(*pairs: tuple[str, int], missing_ok: bool = False) -> None:
    """Write ``net/...`` sysctls of the calling thread's namespace (the caller entered it)."""
    for key, value in pairs:
        try:
            fd = os.open("/proc/sys/" + key, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if missing_ok:
                continue
            raise SysctlError(f"unknown sysctl {key!r} in this network namespace") from None
        try:
            os.write(fd, str(value).encode())
        except OSError as e:
            raise SysctlError(f"sysctl {key} = {value!r} refused: {e.strerror}") from None
        finally:
            os.close(fd)


def quiet_icmp_limits(ns: NetNS) -> None:
    """Turn off ICMP error rate limits in ``ns`` so bulk probes see every unreachable."""
    with ns.enter():  # /proc/sys/net resolves against the opening thread's namespace
        _quiet_icmp_limits()


def _quiet_icmp_limits() -> None:
    for pair in (
        ("net/ipv4/icmp_ratelimit", 0),
        ("net/ipv6/icmp/ratelimit", 0),
        # global (so absent from a namespace's /proc/sys) on older kernels: skipped there
        ("net/ipv4/icmp_msgs_per_sec", 1_000_000),
        ("net/ipv4/icmp_msgs_burst", 1_000_000),
    ):
        with contextlib.suppress(SysctlError):
            _write_sysctls(pair, missing_ok=True)
