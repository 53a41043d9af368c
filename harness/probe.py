"""Flow -> Verdict: which labelled socket received each injected flow.

A verdict is the label of the socket that got the flow (TCP: the listener whose accept
queue got the connection after a full handshake; UDP: the socket the datagram was
delivered to), or ``RST`` (the kernel reset the SYN), ``ICMP`` (an ICMP unreachable came
back), ``NONE`` (nothing came back, or a datagram nobody labelled took), ``UNLABELLED`` (the
TCP handshake completed but no labelled listener's accept queue got the connection).

Probing leaves nothing behind: an accepted connection is closed with an RST (SO_LINGER 0),
a half-open one is reset from our side, so the next probe of the same 4-tuple starts clean.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness import packets
from harness.errors import ConfigError
from harness.flow import Flow
from harness.packets import TCP_ACK, TCP_RST, TCP_SYN
from harness.sockets import labelled

if TYPE_CHECKING:
    from harness.inject import Injector
    from harness.netns import Namespace

RST, ICMP, NONE, UNLABELLED = "RST", "ICMP", "NONE", "UNLABELLED"
RESERVED_VERDICTS = frozenset({RST, ICMP, NONE, UNLABELLED})
ISN = 0x1000_0000
TOKEN = b"bindlab-probe:"
LINGER_RST = struct.pack("ii", 1, 0)

Key = tuple[int, bytes, int]  # (IP protocol, client ip, client port): unique within a batch


@dataclass
class _Pending:
    flow: Flow
    injector: Injector
    key: Key
    state: str = "sent"  # sent -> synack -> done
    verdict: str | None = None
    trace: list[tuple[str, bytes]] = field(default_factory=list)


_V4MAPPED = b"\0" * 10 + b"\xff\xff"


def _sockaddr_ip(ip: str) -> bytes:
    """Packed address of a sockaddr's host; an IPv4-mapped IPv6 address becomes IPv4."""
    if ":" not in ip:
        return socket.inet_pton(socket.AF_INET, ip)
    b = socket.inet_pton(socket.AF_INET6, ip.split("%")[0])
    return b[12:] if b[:12] == _V4MAPPED else b


class _Batch:
    """One round of injection: every flow's 4-tuple is distinct within a batch."""

    def __init__(self, ns: Namespace, flows: list[Flow], record: bool) -> None:
        self.ns = ns
        self.record = record
        self.pending: dict[Key, _Pending] = {}
        self.unresolved = 0
        for flow in flows:
            inj = ns.injector if flow.dev is None else ns.injectors.get(flow.dev)
            if inj is None:
                raise ConfigError(
                    f"flow {flow}: no injector named {flow.dev!r}; "
                    f"create it with ns.add_injector({flow.dev!r})"
                )
            k = flow.key[:3]
            self.pending[k] = _Pending(flow, inj, k)
        self.unresolved = len(self.pending)
        self.tokens: dict[bytes, _Pending] = {}

    def _send(self, p: _Pending, pkt: bytes) -> None:
        p.injector.send(pkt)
        if self.record:
            p.trace.append(("in", pkt))

    def _resolve(self, p: _Pending, verdict: str) -> None:
        if p.verdict is None:
            p.verdict = verdict
            self.unresolved -= 1
        p.state = "done"

    def inject(self, chunk: int) -> Iterator[None]:
        """Send every flow's first packet, yielding after each ``chunk`` of them."""
        for i, p in enumerate(self.pending.values()):
            if i and i % chunk == 0:
                yield
            proto, src, sport, dst, dport = p.flow.key
            if proto == packets.PROTO_TCP:
                self._send(p, packets.tcp(src, dst, sport, dport, TCP_SYN, seq=ISN))
            else:
                token = TOKEN + str(i).encode()
                self.tokens[token] = p
                self._send(p, packets.udp(src, dst, sport, dport, token))

    def on_packet(self, pkt: bytes) -> bool:
        r = packets.decode(pkt)
        if r is None:
            return False
        if r.icmp is not None:  # quotes our packet: client -> local
            p = self.pending.get((r.proto, r.src, r.sport))
            if p is None or p.state == "done":
                return False
            if self.record:
                p.trace.append(("out", pkt))
            self._resolve(p, ICMP)
            return True
        p = self.pending.get((r.proto, r.dst, r.dport))
        if p is None or p.state == "done":
            return False
        if self.record:
            p.trace.append(("out", pkt))
        if r.proto != packets.PROTO_TCP:
            return False
        if r.flags & TCP_RST and p.state == "sent":
            self._resolve(p, RST)
            return True
        if r.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK and p.state == "sent":
            _, src, sport, dst, dport = p.flow.key
            self._send(p, packets.tcp(src, dst, sport, dport, TCP_ACK, seq=ISN + 1, ack=r.seq + 1))
            p.state = "synack"
            return True
        return False

    def on_accept(self, label: str, conn: socket.socket, peer: Any) -> bool:
        """A labelled listener accepted ``conn`` from ``peer``: reset it and record the verdict."""
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        conn.close()
        try:
            p = self.pending.get((packets.PROTO_TCP, _sockaddr_ip(peer[0]), peer[1]))
        except (OSError, IndexError, TypeError):
            return False
        if p is None or p.verdict is not None:
            return False
        self._resolve(p, label)
        return True

    def on_datagram(self, label: str, data: bytes) -> bool:
        p = self.tokens.get(data)
        if p is None or p.verdict is not None:
            return False
        self._resolve(p, label)
        return True

    def finish(self) -> None:
        """Give every unresolved flow its verdict, and reset half-open connections."""
        for p in self.pending.values():
            if p.verdict is not None:
                continue
            if p.state == "synack":
                _, src, sport, dst, dport = p.flow.key
                self._send(p, packets.tcp(src, dst, sport, dport, TCP_RST, seq=ISN + 1))
                self._resolve(p, UNLABELLED)
            else:
                self._resolve(p, NONE)


def _batches(flows: list[Flow], size: int) -> list[list[Flow]]:
    """Split into batches of at most ``size`` in which no client (proto, ip, port) repeats."""
    out: list[tuple[set[tuple[Any, ...]], list[Flow]]] = []
    for f in flows:
        t = f.key[:3]
        for seen, batch in out:
            if t not in seen and len(batch) < size:
                seen.add(t)
                batch.append(f)
                break
        else:
            out.append(({t}, [f]))
    return [b for _, b in out]


def probe(
    ns: Namespace,
    flows: Iterable[str | Flow],
    *,
    settle: float = 0.05,
    timeout: float = 5.0,
    batch: int = 512,
    trace: dict[Any, list[tuple[str, bytes]]] | None = None,
) -> dict[Any, str]:
    """Inject ``flows`` into ``ns`` and return ``{flow: verdict}``, keyed as given.

    ``settle`` is how long to wait for a reply that has not come (it bounds ``NONE``
    verdicts); ``timeout`` caps a batch. With ``trace``, the packets exchanged for each
    flow are stored there as ``[("in"|"out", bytes), ...]``.
    """
    given = list(flows)
    parsed = [Flow.parse(f) for f in given]  # every syntax error before any injection
    if len(set(parsed)) != len(parsed):
        dup = next(f for f, n in Counter(parsed).items() if n > 1)
        raise ConfigError(f"flow {dup} is given twice in one probe")
    ns.injector  # noqa: B018 - create the default injector (and its routes) first
    verdicts: dict[Flow, str] = {}
    traces: dict[Flow, list[tuple[str, bytes]]] = {}
    with _listening(ns) as (tcp_socks, udp_socks):
        for chunk in _batches(parsed, batch):
            b = _Batch(ns, chunk, trace is not None)
            _run_batch(ns, b, tcp_socks, udp_socks, settle, timeout)
            for p in b.pending.values():
                verdicts[p.flow] = p.verdict or NONE
                traces[p.flow] = p.trace
    if trace is not None:
        for g, f in zip(given, parsed, strict=True):
            trace[g] = traces[f]
    ns.observations.extend((str(f), verdicts[f]) for f in parsed)
    return {g: verdicts[f] for g, f in zip(given, parsed, strict=True)}


@contextlib.contextmanager
def _listening(ns: Namespace) -> Any:
    """The labelled listeners and UDP sockets, non-blocking for the probe's duration."""
    tcp = [
        (lbl, s)
        for lbl, s in labelled(ns, socket.SOCK_STREAM)
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    ]
    udp = labelled(ns, socket.SOCK_DGRAM)
    saved = [(s, s.gettimeout()) for _, s in tcp + udp]
    for s, _ in saved:
        s.setblocking(False)
    try:
        yield tcp, udp
    finally:
        for s, t in saved:
            with contextlib.suppress(OSError):
                s.settimeout(t)


def _run_batch(
    ns: Namespace,
    b: _Batch,
    tcp: list[tuple[str, socket.socket]],
    udp: list[tuple[str, socket.socket]],
    settle: float,
    timeout: float,
) -> None:
    injectors = {id(p.injector): p.injector for p in b.pending.values()}
    injectors.update({id(i): i for i in ns.injectors.values()})
    ep = select.epoll()
    owners: dict[int, tuple[str, str, Any]] = {}
    for inj in injectors.values():
        owners[inj._fd()] = ("inj", "", inj)
    for lbl, s in tcp:
        owners[s.fileno()] = ("tcp", lbl, s)
    for lbl, s in udp:
        owners[s.fileno()] = ("udp", lbl, s)
    for fd in owners:
        ep.register(fd, select.EPOLLIN)

    def pump(wait: float) -> tuple[bool, bool]:
        """Handle what is ready (waiting up to ``wait`` s): (any events, any progress)."""
        events = ep.poll(wait)
        progressed = False
        for fd, _ in events:
            kind, lbl, obj = owners[fd]
            if kind == "inj":
                while (pkt := obj.recv()) is not None:
                    progressed |= b.on_packet(pkt)
            elif kind == "tcp":
                while True:
                    try:
                        conn, peer = obj.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    progressed |= b.on_accept(lbl, conn, peer)
            else:
                while True:
                    try:
                        data = obj.recv(256, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:  # a pending ICMP error on a connected socket; now cleared
                        continue
                    progressed |= b.on_datagram(lbl, data)
        return bool(events), progressed

    try:
        # Handle replies every few packets: a socket's receive buffer holds ~256 datagrams.
        for _ in b.inject(chunk=64):
            pump(0)
        hard = time.monotonic() + timeout
        quiet_until = time.monotonic() + settle
        while b.unresolved and time.monotonic() < hard:
            wait = max(0.0, min(quiet_until, hard) - time.monotonic())
            had_events, progressed = pump(wait)
            if progressed:
                quiet_until = time.monotonic() + settle
            elif not had_events and time.monotonic() >= quiet_until:
                break
        b.finish()
        for inj in injectors.values():  # the RSTs of closed probe connections
            inj.drain()
    finally:
        ep.close()


def distribution(ns: Namespace, flows: Iterable[str | Flow], **kw: Any) -> dict[str, int]:
    """``{verdict: count}`` over ``flows`` (for SO_REUSEPORT groups and the like)."""
    return dict(Counter(probe(ns, flows, **kw).values()))
