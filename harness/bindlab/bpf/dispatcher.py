"""The prefix dispatcher: "protocol T, prefix P, port X (or any port) goes to this socket".

A :class:`Dispatcher` is ``dispatch.bpf.c`` loaded and attached (a ``bpf_link``) to one
namespace's sk_lookup hook, with bindings held in an LPM trie and sockets in a SOCKMAP
(tubular's design; layouts and precedence in :mod:`bindlab.bpf.keys`). Bindings are added,
replaced and removed with single map updates while traffic flows; each has a lookup counter.
``close()`` detaches and frees everything; it is registered with ``ns.defer``.

Example::

    d = sk_lookup(ns)
    d.bind("tcp", "192.0.2.0/24", 80, nginx)
    d.bind("tcp", "198.51.100.0/24", None, proxy)   # every port
    assert ns.probe(["tcp 198.18.0.1:9 -> 192.0.2.7:80"]) == {...: "nginx"}
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bindlab.bpf import build, keys, query
from bindlab.bpf.keys import Network, Rule
from bindlab.bpf.libbpf import BPF_ANY, BpfObject, LibbpfError, Link, Map, lib, possible_cpus
from bindlab.errors import ConfigError, HarnessError
from bindlab.flow import Flow
from bindlab.sockets import labels

if TYPE_CHECKING:
    from bindlab.netns import NetNS

V4MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
BPF_SK_LOOKUP_F_NO_REUSEPORT = 1 << 1  # <linux/bpf.h>
STATS = ("no_match", "match", "drop_no_socket", "drop_assign")  # enum STAT_* in the C
_U32 = struct.Struct("=I")
_dispatchers: weakref.WeakKeyDictionary[NetNS, Dispatcher] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Binding:
    """One binding as listed by :meth:`Dispatcher.bindings`."""

    rule: Rule
    labels: tuple[str, ...]  # its sockets' labels, in the order they are tried
    lookups: int  # flows it matched
    open: bool  # one of its sockets is still open (in the SOCKMAP)
    no_reuseport: bool = False  # assigned with BPF_SK_LOOKUP_F_NO_REUSEPORT
    ifindex: int = 0  # only flows that came in on this interface (0: any)

    @property
    def proto(self) -> str:
        return self.rule.proto

    @property
    def prefix(self) -> Network:
        return self.rule.prefix

    @property
    def port(self) -> int:
        return self.rule.port

    def __str__(self) -> str:
        gone = "" if self.open else " (socket closed: drops)"
        extra = (" no_reuseport" if self.no_reuseport else "") + (
            f" ifindex {self.ifindex}" if self.ifindex else ""
        )
        return f"{self.rule}{extra} -> {','.join(self.labels)} [{self.lookups} lookups]{gone}"


class _Slots:
    """Slot numbers 0..size-1 for an array-like map, reused after release."""

    def __init__(self, size: int, what: str) -> None:
        self.size, self.what, self.next = size, what, 0
        self.free: list[int] = []

    def take(self) -> int:
        if self.free:
            return self.free.pop()
        if self.next >= self.size:
            raise ConfigError(f"dispatcher full: all {self.size} {self.what} slots are in use")
        self.next += 1
        return self.next - 1

    def give(self, slot: int) -> None:
        self.free.append(slot)


@dataclass
class _Held:
    sock: socket.socket
    slot: int
    label: str
    refs: int = 0


def label_of(ns: NetNS, sock: socket.socket) -> str:
    """The label ``sock`` carries in ``ns`` (``fdN`` if it has none)."""
    entry = labels(ns).get(sock.fileno())
    return entry[0] if entry is not None and entry[1] is sock else f"fd{sock.fileno()}"


def check_target(rule: Rule, sock: socket.socket, label: str) -> None:
    """Refuse a socket ``bpf_sk_assign`` could never take for ``rule``'s flows."""
    if sock.fileno() < 0:
        raise ConfigError(f"binding {rule}: socket {label} is closed")
    want = socket.SOCK_STREAM if rule.proto == "tcp" else socket.SOCK_DGRAM
    if sock.type != want:
        raise ConfigError(f"binding {rule}: socket {label} is not a {rule.proto} socket")
    if rule.prefix.version == 6 and sock.family != socket.AF_INET6:
        raise ConfigError(f"binding {rule}: IPv4 socket {label} cannot take IPv6 flows")
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise ConfigError(f"binding {rule}: socket {label} is not AF_INET/AF_INET6")
    if rule.proto == "tcp" and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ConfigError(
            f"binding {rule}: TCP socket {label} is not listening (call listen() first)"
        )
    if rule.proto == "udp":
        try:
            sock.getpeername()
        except OSError:
            return
        raise ConfigError(f"binding {rule}: UDP socket {label} is connected; it cannot take flows")


class Dispatcher:
    """``dispatch.bpf.c`` attached to ``ns``; see the module docstring."""

    def __init__(self, ns: NetNS, *, max_bindings: int = 4096, max_sockets: int = 1024) -> None:
        self.ns = ns
        self.closed = False
        self._lock = threading.Lock()
        self._rules: dict[Rule, tuple[int, list[int]]] = {}  # rule -> (counter, socket keys)
        self._flags: dict[Rule, tuple[bool, int]] = {}  # rule -> (no_reuseport, ifindex)
        self._held: dict[int, _Held] = {}  # id(sock) -> held socket
        self._counters = _Slots(max_bindings, "binding")
        self._sockslots = _Slots(max_sockets, "socket")
        self.prefix_bound: list[Any] = []  # bindlab.bpf.prefixbind's records
        path = build.object_path("dispatch")
        sizes = {"bindings": max_bindings, "lookups": max_bindings, "sockets": max_sockets}
        self._obj = BpfObject(path, sizes)
        self._link: Link | None = None
        try:
            ncpu = possible_cpus()
            self._bindings = self._obj.map("bindings", keys.KEY.size, keys.VALUE.size)
            self._sockets = self._obj.map("sockets", 4, 8)
            self._lookups = self._obj.map("lookups", 4, 8 * ncpu)
            self._stats = self._obj.map("stats", 4, 8 * ncpu)
            self.attach()
        except BaseException:
            self._obj.close()
            raise
        ns.defer(self.close)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("attached" if self.attached else "detached")
        return f"<Dispatcher {state} {len(self._rules)} bindings in {self.ns!r}>"

    # -- attachment ------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        return self._link is not None and self._link.attached

    def attach(self) -> None:
        """Attach to the namespace's sk_lookup hook (done at creation)."""
        self._check_open()
        if not self.attached:
            self._link = self._obj.attach_netns("dispatch", self.ns.fd)

    def detach(self) -> None:
        """Detach, keeping bindings and sockets: the regular lookup alone decides."""
        if self._link is not None:
            self._link.destroy()
            self._link = None

    def close(self) -> None:
        """Detach and free the program, its maps and its hold on sockets (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.detach()
        finally:
            self._obj.close()
            self._held.clear()
            if _dispatchers.get(self.ns) is self:
                del _dispatchers[self.ns]

    def _check_open(self) -> None:
        if self.closed:
            raise HarnessError(f"{self!r}: closed")

    # -- bindings --------------------------------------------------------------------------

    def bind(
        self,
        proto: str,
        prefix: str | Network,
        port: int | None,
        *socks: socket.socket,
        no_reuseport: bool = False,
        ifindex: int | str | None = None,
    ) -> Rule:
        """Send flows matching (``proto``, ``prefix``, ``port``; 0/None = any port) to the
        first still-open socket of ``socks`` (1 to 4); replaces an existing binding
        atomically.

        ``no_reuseport=True`` assigns with BPF_SK_LOOKUP_F_NO_REUSEPORT: that very socket,
        not the member of its SO_REUSEPORT group the group's hash or program would pick.
        ``ifindex`` (an index or a link name) limits the binding to flows that came in on
        that interface; flows from elsewhere go to the regular lookup.
        """
        self._check_open()
        rule = Rule.make(proto, prefix, port)
        flags = BPF_SK_LOOKUP_F_NO_REUSEPORT if no_reuseport else 0
        if isinstance(ifindex, str):
            from bindlab.net import link_index

            ifindex = link_index(self.ns, ifindex)
        if ifindex is not None and (not isinstance(ifindex, int) or ifindex <= 0):
            raise ConfigError(f"binding {rule}: ifindex {ifindex!r} is not a positive index")
        if isinstance(rule.prefix, ipaddress.IPv6Network) and rule.prefix.subnet_of(V4MAPPED):
            raise ConfigError(f"binding {rule}: bind the IPv4 prefix, not its IPv4-mapped form")
        if not 1 <= len(socks) <= keys.MAX_FALLBACK:
            raise ConfigError(f"binding {rule}: give 1 to {keys.MAX_FALLBACK} sockets")
        for s in socks:
            check_target(rule, s, label_of(self.ns, s))
        with self._lock:
            self._check_open()
            old = self._rules.get(rule)
            counter = old[0] if old else self._new_counter()
            held: list[_Held] = []
            try:
                for s in socks:
                    held.append(self._hold(s))
            except BaseException:
                for h in held:
                    self._release(id(h.sock))
                if old is None:
                    self._counters.give(counter)
                raise
            value = keys.encode_value(
                counter, rule.prefix, (h.slot for h in held), flags, ifindex or 0
            )
            self._bindings.update(rule.key(), value, BPF_ANY)
            self._rules[rule] = (counter, [id(s) for s in socks])
            self._flags[rule] = (no_reuseport, ifindex or 0)
            if old is not None:
                for k in old[1]:
                    self._release(k)
        return rule

    def unbind(self, proto: str, prefix: str | Network, port: int | None) -> None:
        """Remove a binding: its flows go back to the regular lookup."""
        rule = Rule.make(proto, prefix, port)
        with self._lock:
            self._check_open()
            entry = self._rules.pop(rule, None)
            self._flags.pop(rule, None)
            if entry is None:
                raise ConfigError(f"no binding {rule}; bound: {', '.join(map(str, self._rules))}")
            self._bindings.delete(rule.key())
            self._counters.give(entry[0])
            for k in entry[1]:
                self._release(k)

    def bindings(self) -> list[Binding]:
        """Every binding, most specific first within a protocol, with counters."""
        out = []
        with self._lock:
            for rule in sorted(
                self._rules, key=lambda r: (r.proto, r.prefix.version, -r.prefix.prefixlen, r)
            ):
                counter, ks = self._rules[rule]
                held = [self._held[k] for k in ks]
                alive = any(self._sockets.lookup(_U32.pack(h.slot)) is not None for h in held)
                nr, ifindex = self._flags.get(rule, (False, 0))
                labels_ = tuple(h.label for h in held)
                out.append(Binding(rule, labels_, self._count(counter), alive, nr, ifindex))
        return out

    def kernel_rules(self) -> set[Rule]:
        """The rules read back from the kernel's trie (what the program really matches)."""
        return {keys.decode_key(k) for k in self._bindings}

    def lookups(self, proto: str, prefix: str | Network, port: int | None) -> int:
        """How many flows the binding matched since it was added."""
        rule = Rule.make(proto, prefix, port)
        entry = self._rules.get(rule)
        if entry is None:
            raise ConfigError(f"no binding {rule}")
        return self._count(entry[0])

    def test_run(self, flow: str | Flow) -> tuple[str, str | None]:
        """Run the program once on ``flow``'s context, without a packet
        (``BPF_PROG_TEST_RUN``): ``("pass" | "drop", label of the selected socket or None)``.
        ``None`` with ``"pass"``: no binding matched, the regular lookup would decide."""
        self._check_open()
        return query.test_run(self.ns, self.prog_fd, flow)

    @property
    def prog_fd(self) -> int:
        """The fd of the loaded ``dispatch`` program."""
        return int(lib().bpf_program__fd(self._obj.program("dispatch")))

    def stats(self) -> dict[str, int]:
        """Program-wide counters: ``no_match``, ``match``, ``drop_no_socket``, ``drop_assign``."""
        return {name: self._sum(self._stats, i) for i, name in enumerate(STATS)}

    # -- internals -------------------------------------------------------------------------

    def _new_counter(self) -> int:
        slot = self._counters.take()
        self._lookups.update(_U32.pack(slot), bytes(self._lookups.value_size), BPF_ANY)
        return slot

    def _count(self, slot: int) -> int:
        return self._sum(self._lookups, slot)

    @staticmethod
    def _sum(m: Map, slot: int) -> int:
        raw = m.lookup(_U32.pack(slot)) or b""
        return sum(struct.unpack(f"={len(raw) // 8}Q", raw))

    def _hold(self, sock: socket.socket) -> _Held:
        h = self._held.get(id(sock))
        if h is None:
            slot = self._sockslots.take()
            label = label_of(self.ns, sock)
            try:
                self._sockets.update(_U32.pack(slot), struct.pack("=Q", sock.fileno()), BPF_ANY)
            except LibbpfError as e:
                self._sockslots.give(slot)
                raise HarnessError(f"SOCKMAP refused socket {label}: {e}") from e
            h = self._held[id(sock)] = _Held(sock, slot, label)
        h.refs += 1
        return h

    def _release(self, key: int) -> None:
        h = self._held[key]
        h.refs -= 1
        if h.refs == 0:
            del self._held[key]
            with contextlib.suppress(LibbpfError):  # closed: the kernel removed it already
                self._sockets.delete(_U32.pack(h.slot))
            self._sockslots.give(h.slot)


def sk_lookup(ns: NetNS, **kw: Any) -> Dispatcher:
    """The dispatcher of ``ns``, loaded and attached on first use (``kw``: map sizes)."""
    d = _dispatchers.get(ns)
    if d is None or d.closed:
        d = _dispatchers[ns] = Dispatcher(ns, **kw)
    elif kw:
        raise ConfigError(f"{d!r} exists already; map sizes are set on first use only")
    return d
