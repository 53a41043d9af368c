"""Disposable network namespaces, created in-process and held by a file descriptor.

A namespace is anonymous (it lives as long as its fd and the sockets and devices
made in it) unless a name is asked for; a named one is bind-mounted at
``/run/netns/bl-<pid>-<starttime>-<rand>`` so that ``ip netns exec`` can see it, and the
reaper (:mod:`bindlab.reaper`) removes it if its owner dies without closing it. This module
is the core; :mod:`bindlab.namespace` holds the facade users call.

``enter()`` switches only the calling thread (``setns`` is per thread), saving and
restoring through ``/proc/thread-self/ns/net``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from bindlab.errors import CommandFailed, HarnessError
from bindlab.reaper import RUN_NETNS, make_name, remove_named

if TYPE_CHECKING:
    from pyroute2 import IPRoute

CLONE_NEWNET = 0x40000000  # <linux/sched.h>
MS_BIND = 0x1000  # <linux/mount.h>
SIOCGIFFLAGS = 0x8913  # <linux/sockios.h>
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1  # <linux/if.h>
T = TypeVar("T")

# what `ip netns exec` does after setns: a private mount namespace whose /sys is a sysfs
# mounted from inside the network namespace (sysfs shows the mounting task's netns)
_PRIVATE_SYSFS = (
    "--",
    "unshare",
    "--mount",
    "--propagation",
    "slave",
    "--",
    "sh",
    "-c",
    'mount -t sysfs bindlab-sysfs /sys && exec "$@"',
    "bindlab-run",
)

_libc = ctypes.CDLL(None, use_errno=True)


def isolated(argv: Sequence[str], ns_path: str) -> list[str]:
    """The command line running ``argv`` inside the namespace at ``ns_path`` with its own
    ``/sys`` (:meth:`NetNS.run` and :mod:`bindlab.process` both start children so)."""
    return ["nsenter", f"--net={ns_path}", *_PRIVATE_SYSFS, *argv]


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


def set_lo_up() -> None:
    """Bring up ``lo`` of the calling thread's namespace: two ioctls, as ``ifconfig`` does
    (a netlink handle costs ~0.5 ms more to open and use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = bytearray(struct.pack("16sH22x", b"lo", 0))  # struct ifreq: name, ifr_flags
        fcntl.ioctl(s, SIOCGIFFLAGS, ifr)
        (flags,) = struct.unpack_from("H", ifr, 16)
        struct.pack_into("H", ifr, 16, flags | IFF_UP)
        fcntl.ioctl(s, SIOCSIFFLAGS, ifr)


def _new_netns_fd(lo_up: bool = False) -> int:
    saved = current_netns_fd()
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            fd = current_netns_fd()
            if lo_up:
                try:
                    set_lo_up()
                except BaseException:
                    os.close(fd)
                    raise
            return fd
        finally:
            setns(saved)
    finally:
        os.close(saved)


class StashKey(Generic[T]):
    """A private key of :class:`Stash`: the module that makes it owns what it stores."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<StashKey {self.name}>"


class Stash:
    """Typed per-namespace state (as pytest's ``config.stash``): ``setdefault`` creates it."""

    def __init__(self) -> None:
        self._data: dict[StashKey[Any], Any] = {}

    def setdefault(self, key: StashKey[T], make: Callable[[], T]) -> T:
        if key not in self._data:
            self._data[key] = make()
        return self._data[key]

    def get(self, key: StashKey[T]) -> T | None:
        return self._data.get(key)


class NetNS:
    """The core of a namespace made by this process: its fd, ``enter()``, ``run()``, a
    netlink handle and the cleanups that close everything made in it, last first.

    The modules that configure it (:mod:`bindlab.net`, :mod:`bindlab.sockets`,
    :mod:`bindlab.inject`, :mod:`bindlab.probe`) take a ``NetNS`` and keep their own
    per-namespace state in :attr:`stash` under a private :class:`StashKey`; the
    :class:`~bindlab.namespace.Namespace` facade above them is what users hold.

    Example::

        with NetNS() as core:
            with core.enter():
                socket.socket().bind(("127.0.0.1", 80))
    """

    def __init__(self, *, named: bool = False, lo_up: bool = True) -> None:
        self.fd = _new_netns_fd(lo_up)
        self.name: str | None = None
        self._cleanups: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._ipr: IPRoute | None = None
        self._lock = threading.Lock()
        self.closed = False
        self.stash = Stash()  # per-namespace state of the modules above, by private keys
        if named:
            try:
                self._bind_name()
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
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self.name is not None:
            remove_named(self.name, RUN_NETNS)
        with self._lock:
            os.close(self.fd)
        if errors:
            raise HarnessError(f"{self!r}: " + "; ".join(errors))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.fd}"
        return f"<{type(self).__name__} {self.name or 'anonymous'} {state}>"

    # -- entering and running --------------------------------------------------------------

    @contextlib.contextmanager
    def enter(self) -> Iterator[Self]:
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
        if self.closed:
            raise HarnessError(f"{self!r} is closed: it has no path")
        if self.name is not None:
            return os.path.join(RUN_NETNS, self.name)
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float | None = 60, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run an external program inside the namespace, as ``ip netns exec`` does.

        The child joins the namespace with util-linux ``nsenter``, then gets a private
        mount namespace (``unshare --mount``, propagation slave) with a fresh sysfs on
        ``/sys``, so ``/sys/class/net`` shows this namespace's links and never the host's.
        A closed namespace is refused (:class:`HarnessError`): its fd number may already
        belong to another file.
        """
        with self._lock:  # close() releases the fd under this lock: no reuse in between
            if self.closed:
                raise HarnessError(f"{self!r} is closed: cannot run {' '.join(argv)!r} in it")
            fd = os.dup(self.fd)  # ours until the child has it, whatever close() does meanwhile
        try:
            cmd = isolated(argv, f"/proc/self/fd/{fd}")
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, pass_fds=(fd,), **kw
            )
        finally:
            os.close(fd)
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
