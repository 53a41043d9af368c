"""Disposable network namespaces, created in-process and held by a file descriptor.

A :class:`Namespace` is anonymous (it lives as long as its fd and the sockets and devices
made in it) unless a name is asked for; a named one is bind-mounted at
``/run/netns/bl-<pid>-<starttime>-<rand>`` so that ``ip netns exec`` can see it, and the
reaper (:mod:`harness.reaper`) removes it if its owner dies without closing it.

``enter()`` switches only the calling thread (``setns`` is per thread), saving and
restoring through ``/proc/thread-self/ns/net``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from harness.errors import CommandFailed, HarnessError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from harness.bpf.dispatcher import Dispatcher
    from harness.inject import Injector
    from harness.net import Link

CLONE_NEWNET = 0x40000000  # <linux/sched.h>
MS_BIND = 0x1000  # <linux/mount.h>
MNT_DETACH = 0x2  # <linux/mount.h>
RUN_NETNS = "/run/netns"
NAME_PREFIX = "bl-"
DEFAULT_INJECTOR = "blinj0"

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace held by ``fd``."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns(CLONE_NEWNET)")


def current_netns_fd() -> int:
    """Open (and return an fd of) the calling thread's network namespace."""
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def _new_netns_fd() -> int:
    saved = current_netns_fd()
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            return current_netns_fd()
        finally:
            setns(saved)
    finally:
        os.close(saved)


def process_start_time(pid: int) -> str | None:
    """The start time (clock ticks since boot) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after its closing paren.
    return stat.rsplit(")", 1)[1].split()[19]


def make_name() -> str:
    """A fresh ``bl-`` name that tells the reaper who owns it."""
    pid = os.getpid()
    return f"{NAME_PREFIX}{pid}-{process_start_time(pid)}-{secrets.token_hex(3)}"


class Namespace:
    """A network namespace made by this process; closing it releases everything made in it.

    Example::

        with Namespace() as ns:
            ns.add_local_route("192.0.2.0/24")
            ns.tcp_listener("192.0.2.1:80", label="web")
            assert ns.probe(["tcp 198.18.0.1:1000 -> 192.0.2.1:80"]) == {...: "web"}
    """

    def __init__(self, *, named: bool = False, lo_up: bool = True) -> None:
        self.fd = _new_netns_fd()
        self.name: str | None = None
        self._cleanups: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._ipr: IPRoute | None = None
        self._lock = threading.Lock()
        self.closed = False
        # label registry: fd -> (label, socket); see harness.sockets
        self.sockets: dict[int, tuple[str, Any]] = {}
        self.links: dict[str, Link] = {}
        self.injectors: dict[str, Injector] = {}
        # every (flow, verdict) probed here, in order: results files and reports read it
        self.observations: list[tuple[str, str]] = []
        try:
            if named:
                self._bind_name()
            if lo_up:
                from harness import net

                net.set_up(self, "lo")
        except BaseException:
            self.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------

    def _bind_name(self) -> None:
        name = make_name()
        path = os.path.join(RUN_NETNS, name)
        os.makedirs(RUN_NETNS, exist_ok=True)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
        src = f"/proc/{os.getpid()}/fd/{self.fd}".encode()
        if _libc.mount(src, path.encode(), None, MS_BIND, None) != 0:
            err = ctypes.get_errno()
            os.unlink(path)
            raise OSError(err, f"bind-mount of namespace at {path}: {os.strerror(err)}")
        self.name = name

    def defer(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` when the namespace closes (last registered runs first)."""
        self._cleanups.append((fn, args))

    def close(self) -> None:
        """Close every socket, device fd and netlink handle made here, then the namespace."""
        if self.closed:
            return
        self.closed = True
        errors: list[str] = []
        total = len(self._cleanups)
        for i, (fn, args) in enumerate(reversed(self._cleanups)):
            try:
                fn(*args)
            except Exception as e:  # keep going: every resource must be released
                errors.append(
                    f"cleanup {i + 1} of {total} ({getattr(fn, '__qualname__', fn)}): {e}"
                )
        self._cleanups.clear()
        for _label, sock in self.sockets.values():
            with contextlib.suppress(OSError):
                sock.close()
        self.sockets.clear()
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self.name is not None:
            from harness.reaper import remove_named

            remove_named(self.name, RUN_NETNS)
        os.close(self.fd)
        if errors:
            raise HarnessError(f"{self!r}: " + "; ".join(errors))

    def __enter__(self) -> Namespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.fd}"
        return f"<Namespace {self.name or 'anonymous'} {state}>"

    # -- entering and running --------------------------------------------------------------

    @contextlib.contextmanager
    def enter(self) -> Iterator[Namespace]:
        """Run the ``with`` body (this thread only) inside the namespace."""
        if self.closed:
            raise HarnessError(f"{self!r} is closed")
        saved = current_netns_fd()
        try:
            setns(self.fd)
            try:
                yield self
            finally:
                setns(saved)
        finally:
            os.close(saved)

    @property
    def path(self) -> str:
        """A path naming this namespace for ``nsenter --net=`` (valid while it is open)."""
        if self.name is not None:
            return os.path.join(RUN_NETNS, self.name)
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float | None = 60, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run an external program inside the namespace with util-linux ``nsenter``."""
        cmd = ["nsenter", f"--net={self.path}", "--", *argv]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, pass_fds=(self.fd,), **kw
        )
        if check and proc.returncode != 0:
            raise CommandFailed(list(argv), proc.returncode, proc.stdout, proc.stderr)
        return proc

    @property
    def ipr(self) -> IPRoute:
        """A pyroute2 ``IPRoute`` bound to this namespace (opened inside it, once)."""
        with self._lock:
            if self._ipr is None:
                from pyroute2 import IPRoute

                with self.enter():
                    self._ipr = IPRoute()
            return self._ipr

    # -- the facade: configuration, sockets and probes live in their own modules ------------

    def add_local_route(self, prefix: str, dev: str = "lo") -> None:
        """``ip route add local PREFIX dev DEV`` (scope host), IPv4 or IPv6."""
        from harness import net

        net.add_local_route(self, prefix, dev)

    def add_link(self, name: str, kind: str = "dummy", addrs: Sequence[str] = ()) -> Link:
        """Create a link (a stand-in kind if the kernel lacks ``kind``), up, with addresses."""
        from harness import net

        return net.add_link(self, name, kind, addrs)

    def add_addr(self, dev: str, cidr: str) -> None:
        """Add an address (IPv6 with ``nodad``) to ``dev``."""
        from harness import net

        net.add_addr(self, dev, cidr)

    def sysctl(self, key: str, value: str | int | None = None) -> str:
        """Read (and with ``value``, write) a ``net.*`` sysctl of this namespace."""
        from harness import net

        return net.sysctl(self, key, value)

    def link_index(self, name: str) -> int:
        from harness import net

        return net.link_index(self, name)

    def socket(self, proto: str = "tcp", family: int | str = 4, **opts: Any) -> Any:
        """A raw socket made inside the namespace, with typed options applied."""
        from harness import sockets

        return sockets.make_socket(self, proto, family, **opts)

    def tcp_listener(self, addr: str, label: str, **opts: Any) -> Any:
        """A labelled TCP listener bound to ``addr`` (``IP:PORT``, ``[IPv6]:PORT``)."""
        from harness import sockets

        return sockets.tcp_listener(self, addr, label, **opts)

    def udp_socket(self, addr: str, label: str, connect: str | None = None, **opts: Any) -> Any:
        """A labelled UDP socket bound to ``addr``, optionally connected to ``connect``."""
        from harness import sockets

        return sockets.udp_socket(self, addr, label, connect=connect, **opts)

    def server(self, proto: str, addr: str, label: str, **opts: Any) -> Any:
        """A labelled TCP listener (``proto="tcp"``) or UDP socket (``"udp"``) on ``addr``."""
        from harness import sockets

        return sockets.server(self, proto, addr, label, **opts)

    def label(self, sock: Any, label: str) -> Any:
        """Make any socket count in verdicts under ``label``."""
        from harness import sockets

        return sockets.label(self, sock, label)

    @property
    def injector(self) -> Injector:
        """The default TUN injector (created on first use) that owns the default routes."""
        inj = self.injectors.get(DEFAULT_INJECTOR)
        if inj is None:
            from harness.inject import Injector

            inj = Injector(self, DEFAULT_INJECTOR, default_routes=True)
        return inj

    def add_injector(self, name: str, clients: Sequence[str] = ()) -> Injector:
        """An extra TUN "link" to inject flows on (``Flow(... dev=name)``)."""
        from harness.inject import Injector

        self.injector  # noqa: B018 - the default one owns the default routes; make it first
        return Injector(self, name, clients=clients)

    def probe(self, flows: Any, **kw: Any) -> dict[Any, str]:
        """Inject each flow and return ``{flow: verdict}``; see :func:`harness.probe.probe`."""
        from harness import probe

        return probe.probe(self, flows, **kw)

    def distribution(self, flows: Any, **kw: Any) -> dict[str, int]:
        """Count verdicts per label over many flows (for SO_REUSEPORT groups)."""
        from harness import probe

        return probe.distribution(self, flows, **kw)

    def sk_lookup(self, **kw: Any) -> Dispatcher:
        """This namespace's BPF sk_lookup prefix dispatcher (loaded and attached on first use)."""
        from harness.bpf.dispatcher import sk_lookup

        return sk_lookup(self, **kw)


def running_as_capable() -> str | None:
    """None if this process may create namespaces, else a sentence saying why not."""
    try:
        fd = _new_netns_fd()
    except PermissionError:
        return (
            "bindlab needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network namespaces: "
            "unshare(CLONE_NEWNET) was refused. Run as root or on a privileged runner."
        )
    except OSError as e:
        return f"bindlab cannot create network namespaces: {e}"
    os.close(fd)
    return None
