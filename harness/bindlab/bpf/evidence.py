"""The kernel side of evidence: ``evidence.bpf.c`` loaded once per process, its events read.

A :class:`Tracer` loads the object (the tracepoint programs this kernel has; see
:func:`tiers`); the first evidence probe of a namespace attaches them until it closes
(the last one held detaches them). While a probe runs (:meth:`Tracer.session`) that
namespace's events pass (by inode, filtered in the kernel first), an sk_lookup observer is
appended to the namespace's chain, the ring buffer is read in batches
(:meth:`Session.read`) and takes snapshots of the namespace's sockets
with the ``iter/tcp`` / ``iter/udp`` iterators (:meth:`Session.sockets`). Nothing here is
loaded unless evidence is asked for. Records are decoded into :class:`Event` and
:class:`SockRec`; turning them into per-flow evidence is :mod:`bindlab.bpf.why`'s job.

Evidence probes in one process run one at a time (a lock): they share the ring buffer.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bindlab.bpf import build
from bindlab.bpf.libbpf import BpfObject, LibbpfError, Link, lib
from bindlab.bpf.ringbuf import RingBuffer
from bindlab.errors import FeatureMissing, HarnessError
from bindlab.netns import StashKey

if TYPE_CHECKING:
    from bindlab.netns import NetNS

RINGBUF_SIZE = 1 << 22  # as declared in evidence.bpf.c
EV_SYNACK, EV_DROP, EV_UDP, EV_LOOKUP = 1, 2, 3, 4
VMLINUX = "/sys/kernel/btf/vmlinux"
BTF_KIND_ENUM, BTF_KIND_TYPEDEF, BTF_KIND_FUNC = 6, 8, 12
_EVENT = struct.Struct("=8BII4H2iIHh8xQQ16s16s16s")  # 112 bytes
_SOCKREC = struct.Struct("=4B2HiIHh4xQQ16s16s")
_FLOW = struct.Struct("=BBHH16s16s")  # a flow's key bytes (see record_key)
RADDR, LADDR = 64, 80  # offsets of the flow's addresses in a record
_U32 = struct.Struct("=I")

# Program -> the tier it serves (features rows) and what it needs.
PROGRAMS = {
    "on_drop": "EVIDENCE",
    "on_synack": "EVIDENCE_TCP",
    "on_ready": "EVIDENCE_UDP",
    "on_lookup": "EVIDENCE_SK_LOOKUP",
    "iter_tcp": "EVIDENCE_ITER",
    "iter_udp": "EVIDENCE_ITER",
}
TRACEPOINTS = ("on_drop", "on_synack", "on_ready")
SECTIONS = {
    "on_drop": "tp_btf/kfree_skb",
    "on_synack": "tp_btf/net_dev_queue",
    "on_ready": "tp_btf/sk_data_ready",
    "on_lookup": "sk_lookup",
    "iter_tcp": "iter/tcp",
    "iter_udp": "iter/udp",
}


def _addr(family: int, raw: bytes) -> str:
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return socket.inet_ntop(socket.AF_INET, raw[:4])


@dataclass(frozen=True)
class Event:
    """One ring buffer record (``struct event`` in the C)."""

    kind: int
    proto: int
    family: int
    sk_family: int
    sk_state: int
    tcp_flags: int
    has_prog: bool
    netns: int
    reason: int
    rport: int
    lport: int
    sk_port: int
    sk_dport: int
    sk_dev: int
    iif: int
    rp_id: int
    rp_n: int
    rp_k: int
    cookie: int
    ino: int
    raddr: str
    laddr: str
    sk_addr: str

    @classmethod
    def decode(cls, raw: bytes) -> Event:
        f = list(_EVENT.unpack_from(raw))
        del f[7]  # pad
        fam, sk_fam = f[2], f[3]
        f[-3], f[-2] = _addr(fam, f[-3]), _addr(fam, f[-2])
        f[-1] = _addr(sk_fam, f[-1]) if sk_fam else ""
        f[6] = bool(f[6])
        return cls(*f)


def record_key(raw: bytes) -> bytes:
    """A record's flow as bytes: protocol, family, ports, both addresses (16 bytes each).
    Slices only: this runs once per event. :func:`flow_key` spells a flow the same way."""
    return raw[1:3] + raw[16:20] + raw[RADDR : LADDR + 16]


def flow_key(key: tuple[int, bytes, int, bytes, int]) -> bytes:
    """``Flow.key`` (proto, src, sport, dst, dport) as :func:`record_key` spells it."""
    proto, src, sport, dst, dport = key
    family = socket.AF_INET if len(src) == 4 else socket.AF_INET6
    return _FLOW.pack(proto, family, sport, dport, src, dst)


@dataclass(frozen=True)
class SockRec:
    """One socket of the namespace, as an iterator saw it (``struct sockrec`` in the C)."""

    proto: int
    family: int
    state: int
    has_prog: bool
    port: int
    dport: int
    dev: int
    rp_id: int
    rp_n: int
    rp_k: int
    cookie: int
    ino: int
    addr: str
    daddr: str

    @classmethod
    def decode_all(cls, raw: bytes) -> list[SockRec]:
        out = []
        for f in _SOCKREC.iter_unpack(raw):
            g = list(f)
            g[3] = bool(g[3])
            g[-2], g[-1] = _addr(g[1], g[-2]), _addr(g[1], g[-1])
            out.append(cls(*g))
        return out


# -- what this kernel can do ----------------------------------------------------------------


@functools.cache
def _btf() -> int:
    so = lib()
    so.btf__load_vmlinux_btf.restype = ctypes.c_void_p
    so.btf__find_by_name_kind.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
    so.btf__type_by_id.restype = ctypes.c_void_p
    so.btf__type_by_id.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    so.btf__name_by_offset.restype = ctypes.c_char_p
    so.btf__name_by_offset.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    btf = so.btf__load_vmlinux_btf()
    if not btf:
        raise FeatureMissing(f"EVIDENCE: no kernel BTF ({VMLINUX}: CONFIG_DEBUG_INFO_BTF)")
    return int(btf)


def btf_has(name: str, kind: int) -> bool:
    """Whether the running kernel's BTF has type ``name`` of ``kind`` (BTF_KIND_*)."""
    return lib().btf__find_by_name_kind(_btf(), name.encode(), kind) > 0


@functools.cache
def drop_reasons() -> dict[int, str]:
    """``enum skb_drop_reason`` of the running kernel: value -> name (``NO_SOCKET``)."""
    btf, so = _btf(), lib()
    tid = so.btf__find_by_name_kind(btf, b"skb_drop_reason", BTF_KIND_ENUM)
    if tid <= 0:
        return {}
    t = so.btf__type_by_id(btf, tid)
    info = _U32.unpack(ctypes.string_at(t + 4, 4))[0]
    out = {}
    for i in range(info & 0xFFFF):  # struct btf_enum { __u32 name_off; __s32 val; }
        name_off, val = struct.unpack("=Ii", ctypes.string_at(t + 12 + 8 * i, 8))
        name = so.btf__name_by_offset(btf, name_off).decode()
        out[val] = name.removeprefix("SKB_DROP_REASON_")
    return out


def _missing(program: str) -> str | None:
    """Why ``program`` cannot load here, known before trying (None: try it)."""
    if not os.path.exists(VMLINUX):
        return f"no {VMLINUX} (CONFIG_DEBUG_INFO_BTF)"
    if program == "on_ready" and not btf_has("btf_trace_sk_data_ready", BTF_KIND_TYPEDEF):
        return "no sk_data_ready tracepoint in the kernel's BTF (added in 6.3)"
    return None


@functools.cache
def tiers() -> dict[str, str | None]:
    """Each program of ``evidence.bpf.c``: None if it loads and attaches here, else why not.

    Done by doing it: each program is loaded alone (tracepoints attached and detached)."""
    out: dict[str, str | None] = {}
    try:
        path = build.object_path("evidence")
    except FeatureMissing as e:
        return dict.fromkeys(PROGRAMS, str(e))
    for prog in PROGRAMS:
        why = _missing(prog)
        if why is None:
            try:
                obj = BpfObject(path, skip=tuple(p for p in PROGRAMS if p != prog))
                try:
                    if prog in TRACEPOINTS:
                        obj.attach(prog).destroy()
                finally:
                    obj.close()
            except (LibbpfError, HarnessError) as e:
                why = str(e).splitlines()[0]
        out[prog] = why
    return out


# -- the tracer -------------------------------------------------------------------------------


class Tracer:
    """``evidence.bpf.c`` loaded with the programs this kernel has; one per process."""

    def __init__(self) -> None:
        have = tiers()
        if have["on_drop"] is not None:
            raise FeatureMissing(f"EVIDENCE: {have['on_drop']}")
        self.programs = tuple(p for p, why in have.items() if why is None)
        skip = tuple(p for p in PROGRAMS if p not in self.programs)
        self.obj = BpfObject(build.object_path("evidence"), skip=skip)
        try:
            self.ring = RingBuffer(self.obj.map_fd("events"), RINGBUF_SIZE)
        except BaseException:
            self.obj.close()
            raise
        self._netns = self.obj.map("netns", 4, 4)
        self._held: set[int] = set()  # namespaces keeping the tracepoints attached
        self._links: list[Link] = []  # the tracepoints, attached while one is held
        self.lock = threading.Lock()

    def has(self, program: str) -> bool:
        return program in self.programs

    def _hold(self, ns: NetNS, ino: int) -> None:
        """Keep the tracepoints attached until ``ns`` closes (attaching one costs
        milliseconds: it patches kernel text); they stay while any namespace is held."""
        if ino in self._held:
            return
        if not self._links:
            for prog in TRACEPOINTS:
                if self.has(prog):
                    self._links.append(self.obj.attach(prog))
        self._held.add(ino)
        ns.defer(self._release, ino)

    def _release(self, ino: int) -> None:
        with self.lock:
            self._held.discard(ino)
            if not self._held:
                links, self._links = self._links, []
                for link in reversed(links):
                    link.destroy()

    @contextlib.contextmanager
    def session(self, ns: NetNS) -> Iterator[Session]:
        """Let ``ns``'s events through (until it closes) and read them while the block runs."""
        with self.lock:
            ino = os.fstat(ns.fd).st_ino
            self._hold(ns, ino)
            key = _U32.pack(ino)
            observer = None
            self.ring.read()  # stale events: before this probe
            self._netns.update(key, _U32.pack(1))  # this namespace's events pass, from now
            try:
                if self.has("on_lookup"):  # last in the namespace's chain: sees their choice
                    observer = self.obj.attach_netns("on_lookup", ns.fd)
                yield Session(self, ns, ino)
            finally:
                self._netns.delete(key)
                if observer is not None:
                    observer.destroy()


class Session:
    """One probe's view of the tracer: its namespace's events and sockets."""

    def __init__(self, tracer: Tracer, ns: NetNS, ino: int) -> None:
        self.tracer, self.ns, self.ino = tracer, ns, ino

    def read(self) -> list[bytes]:
        """The records since the last read, raw (this namespace's; sk_lookup's too): decode
        with :meth:`Event.decode`, key with :func:`flow_key`."""
        mine = _U32.pack(self.ino)
        records = self.tracer.ring.read(_EVENT.size)
        return [r for r in records if r[8:12] == mine or r[0] == EV_LOOKUP]

    def sockets(self) -> list[SockRec]:
        """Every TCP listener and UDP socket of the namespace, now (empty without iterators).

        ``iter/tcp`` walks the whole established hash of the host (~10 ms here), so its
        records are reused while the namespace's set of listeners is the same, as told by
        a sock_diag dump of listeners only (which walks the listening hash alone)."""
        if not self.tracer.has("iter_tcp"):
            return []
        listeners = _listeners(self.ns)
        cached = self.ns.stash.get(_TCP_SNAPSHOT)
        with self.ns.enter():  # socket iterators walk the creating thread's namespace
            if cached is not None and cached[0] == listeners:
                tcp = cached[1]
            else:
                tcp = SockRec.decode_all(self.tracer.obj.iterate("iter_tcp"))
                self.ns.stash.setdefault(_TCP_SNAPSHOT, list)[:] = [listeners, tcp]
            return tcp + SockRec.decode_all(self.tracer.obj.iterate("iter_udp"))


_TCP_SNAPSHOT: StashKey[list[Any]] = StashKey("evidence-tcp-snapshot")
_DIAG: StashKey[list[Any]] = StashKey("evidence-diag")
TCPF_LISTEN = 1 << 10


def _listeners(ns: NetNS) -> frozenset[int]:
    """The inodes of ``ns``'s TCP listeners (sock_diag, both families)."""
    holder = ns.stash.get(_DIAG)
    if holder is None:
        from pyroute2 import DiagSocket

        with ns.enter():
            diag = DiagSocket()
        diag.bind()
        holder = ns.stash.setdefault(_DIAG, list)
        holder.append(diag)
        ns.defer(diag.close)
    diag = holder[0]
    return frozenset(
        m["idiag_inode"]
        for fam in (socket.AF_INET, socket.AF_INET6)
        for m in diag.get_sock_stats(family=fam, states=TCPF_LISTEN)
    )


@functools.cache
def tracer() -> Tracer:
    """The process's tracer (loaded on first use; FeatureMissing says why it cannot be)."""
    return Tracer()
