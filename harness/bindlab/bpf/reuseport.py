"""sk_reuseport: choose which socket of a SO_REUSEPORT group gets a flow.

Two ways, both attached to a group through any one of its sockets:

- :class:`ReuseportProgram`, ``reuseport.bpf.c`` attached with SO_ATTACH_REUSEPORT_EBPF:
  ``select(i)`` picks the socket placed at index ``i`` of its REUSEPORT_SOCKARRAY,
  ``drop()`` refuses every flow (TCP: RST, UDP: ICMP, as if no socket listened),
  ``fallback()`` returns SK_PASS without a choice (the kernel's hash decides), and
  ``by_hash(n)`` selects ``hash % n``. An empty index drops, or with
  ``on_error="fallback"`` falls back to the hash.
- classic BPF (SO_ATTACH_REUSEPORT_CBPF), the typed socket option ``reuseport_cbpf``:
  the program returns an index into the group in the order its sockets joined it; an
  index out of range falls back to the hash. :func:`cbpf_index` builds the one-line
  program returning a constant.

Example::

    a = ns.tcp_listener("192.0.2.1:80", "a", reuseport=True)
    b = ns.tcp_listener("192.0.2.1:80", "b", reuseport=True)
    prog = ReuseportProgram(ns).attach(a).place(0, a).place(1, b)
    prog.select(1)      # every flow to 192.0.2.1:80 goes to b
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING

from bindlab.bpf import build
from bindlab.bpf.libbpf import BpfObject, LibbpfError, lib
from bindlab.errors import ConfigError, SockOptError
from bindlab.sockopts import SO_ATTACH_REUSEPORT_EBPF, SO_DETACH_REUSEPORT_BPF

if TYPE_CHECKING:
    from bindlab.netns import NetNS

MODE_SELECT, MODE_DROP, MODE_FALLBACK, MODE_BY_HASH = 0, 1, 2, 3  # enum in the C
SK_DROP, SK_PASS = 0, 1
_CONFIG = struct.Struct("=IIII")
_RESULT = struct.Struct("=Qq")
_ZERO = struct.pack("=I", 0)
BPF_RET_K = 0x06  # <linux/filter.h> BPF_RET | BPF_K


def cbpf_index(index: int) -> list[tuple[int, int, int, int]]:
    """A classic BPF reuseport program that returns ``index`` for every flow."""
    if not isinstance(index, int) or not 0 <= index < 2**32:
        raise ConfigError(f"cbpf_index: expected an unsigned 32-bit index, got {index!r}")
    return [(BPF_RET_K, 0, 0, index)]


def detach(sock: socket.socket) -> None:
    """SO_DETACH_REUSEPORT_BPF: the group goes back to the kernel's hash."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
    except OSError as e:
        raise SockOptError("SO_DETACH_REUSEPORT_BPF", e.errno or 0) from None


class ReuseportProgram:
    """``reuseport.bpf.c`` loaded in this process for ``ns``'s sockets; see the module doc.

    ``size`` is the number of indexes of its socket array.
    """

    def __init__(self, ns: NetNS, size: int = 64) -> None:
        if not isinstance(size, int) or not 0 < size <= 65536:
            raise ConfigError(f"reuseport program: size {size!r} is not in 1-65536")
        self.ns, self.size = ns, size
        self._obj = BpfObject(build.object_path("reuseport"), {"group": size})
        try:
            self._group = self._obj.map("group", 4, 8)
            self._config = self._obj.map("config", 4, _CONFIG.size)
            self._result = self._obj.map("result", 4, _RESULT.size)
            self.fd = int(lib().bpf_program__fd(self._obj.program("select_sock")))
        except BaseException:
            self._obj.close()
            raise
        self.placed: dict[int, socket.socket] = {}
        ns.defer(self.close)

    def __repr__(self) -> str:
        return f"<ReuseportProgram {len(self.placed)}/{self.size} placed in {self.ns!r}>"

    def attach(self, sock: socket.socket) -> ReuseportProgram:
        """SO_ATTACH_REUSEPORT_EBPF on ``sock``: the program decides for its whole group."""
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, self.fd)
        except OSError as e:
            raise SockOptError("SO_ATTACH_REUSEPORT_EBPF", e.errno or 0) from None
        return self

    def place(self, index: int, sock: socket.socket) -> ReuseportProgram:
        """Put ``sock`` (bound, in a SO_REUSEPORT group; TCP listening) at ``index``."""
        self._check_index(index)
        try:
            self._group.update(struct.pack("=I", index), struct.pack("=Q", sock.fileno()))
        except LibbpfError as e:
            raise ConfigError(
                f"reuseport program: the kernel refused the socket for index {index} "
                f"({e.strerror}): it must be bound with SO_REUSEPORT (and TCP listening)"
            ) from None
        self.placed[index] = sock
        return self

    def remove(self, index: int) -> None:
        """Empty ``index`` (a flow selecting it then meets ``on_error``)."""
        self._check_index(index)
        self._group.delete(struct.pack("=I", index))
        self.placed.pop(index, None)

    def select(self, index: int, on_error: str = "drop") -> None:
        """Every flow goes to the socket at ``index``; an empty index drops, or with
        ``on_error="fallback"`` the kernel's hash decides."""
        self._check_index(index)
        self._set(MODE_SELECT, index, on_error)

    def drop(self) -> None:
        """Return SK_DROP for every flow."""
        self._set(MODE_DROP, 0, "drop")

    def fallback(self) -> None:
        """Return SK_PASS without selecting: the kernel's own hash picks the socket."""
        self._set(MODE_FALLBACK, 0, "drop")

    def by_hash(self, modulo: int, on_error: str = "drop") -> None:
        """Select index ``skb hash % modulo`` (the flow hash the kernel computed)."""
        if not isinstance(modulo, int) or not 0 < modulo <= self.size:
            raise ConfigError(f"reuseport program: modulo {modulo!r} is not in 1-{self.size}")
        self._set(MODE_BY_HASH, 0, on_error, modulo)

    @property
    def runs(self) -> int:
        """How many times the program ran."""
        return self._read()[0]

    @property
    def ret(self) -> int:
        """``bpf_sk_select_reuseport``'s return value (``-errno``) in the last run."""
        return self._read()[1]

    def close(self) -> None:
        """Free the program and its maps (idempotent); an attached group keeps the program."""
        self._obj.close()

    def _read(self) -> tuple[int, int]:
        raw = self._result.lookup(_ZERO)
        runs, ret = _RESULT.unpack(raw or bytes(_RESULT.size))
        return runs, ret

    def _set(self, mode: int, index: int, on_error: str, modulo: int = 0) -> None:
        if on_error not in ("drop", "fallback"):
            raise ConfigError(f"reuseport program: on_error {on_error!r}: use 'drop' or 'fallback'")
        verdict = SK_DROP if on_error == "drop" else SK_PASS
        self._config.update(_ZERO, _CONFIG.pack(mode, index, verdict, modulo))

    def _check_index(self, index: int) -> None:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < self.size:
            raise ConfigError(f"reuseport program: index {index!r} is not in 0-{self.size - 1}")
