"""Flow -> Verdict: which labelled socket received each injected flow.

A verdict is the label of the socket that got the flow (TCP: the listener whose accept
queue got the connection after a full handshake; UDP: the socket the datagram was
delivered to), or ``RST`` (the kernel reset the SYN), ``ICMP`` (an ICMP unreachable came
back), ``NONE`` (nothing came back, or a datagram nobody labelled took), ``UNLABELLED`` (the
TCP handshake completed but no labelled listener's accept queue got the connection).

Probing leaves nothing behind: an accepted connection is closed with an RST (SO_LINGER 0),
a half-open one is reset from our side, so the next probe of the same 4-tuple starts clean.

How a probe runs: the flows are split into batches in which no client (protocol, address,
port) repeats, so that a reply names its flow. One epoll set watches the injectors (TUN
devices) and the labelled sockets for the whole probe. A batch injects its SYNs (UDP: a
datagram carrying a token) and handles what is ready after every 64 packets (a socket's
receive buffer holds ~256 datagrams): replies are read from the TUNs (a SYN-ACK is answered
with the ACK, an RST or ICMP error is a verdict), connections are accepted from the labelled
listeners, datagrams read from the labelled UDP sockets. Then it waits until every flow has
a verdict or nothing more happens for ``settle`` s.

This is the hot path of bulk probes: ``bench/bench_probe.py`` holds it to at least half the
rate of a bare loop doing the same kernel work with pre-built packets. Per flow it keeps a
``_Pending`` record with slots, reads plain TCP replies at fixed offsets
(:func:`packets.tcp_fields`), accepts bare fds, and builds no trace unless asked to.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bindlab import packets, programs
from bindlab.errors import ConfigError
from bindlab.flow import ICMP, NONE, RST, UNLABELLED, V4MAPPED_PREFIX, Flow
from bindlab.inject import DEFAULT_INJECTOR, injectors
from bindlab.netns import StashKey
from bindlab.packets import PROTO_TCP, TCP_ACK, TCP_RST, TCP_SYN
from bindlab.sockets import labelled

if TYPE_CHECKING:
    from bindlab.bpf.why import Evidence, Recorder
    from bindlab.netns import NetNS

# (flows, verdicts) of each probe: flows are spelled out only when somebody reads them
_OBSERVATIONS: StashKey[list[tuple[list[Flow], list[str]]]] = StashKey("observations")
_EXPECTED: StashKey[dict[str, str]] = StashKey("expected")
_MISMATCHED: StashKey[dict[str, Trace]] = StashKey("mismatched packets")
_RECORDING: StashKey[list[tuple[str, Trace]]] = StashKey("recorded packets")

ISN = 0x1000_0000
TOKEN = b"bindlab-probe:"
LINGER_RST = struct.pack("ii", 1, 0)

Key = tuple[int, bytes, int]  # (IP protocol, client ip, client port): unique within a batch
Trace = list[tuple[str, bytes, float]]  # ("in" injected | "out" sent back, packet, time.time())

# How far a flow's exchange got.
SENT, SYNACK, DONE = "sent", "synack", "done"
_SYN_ACK = TCP_SYN | TCP_ACK


class _Pending:
    """One flow of a batch: where it is injected, how far it got, its verdict (and trace)."""

    __slots__ = ("addr", "fd", "state", "trace", "verdict")

    def __init__(self, flow: Flow, fd: int, trace: Trace | None) -> None:
        self.addr = flow.key  # (proto, src, sport, dst, dport)
        self.fd = fd  # of the injector the flow comes in on
        self.state = SENT
        self.verdict: str | None = None
        self.trace = trace  # None unless recording


def _sockaddr_ip(ip: str) -> bytes:
    """Packed address of a sockaddr's host; an IPv4-mapped IPv6 address becomes IPv4."""
    if ":" not in ip:
        return socket.inet_pton(socket.AF_INET, ip)
    b = socket.inet_pton(socket.AF_INET6, ip.split("%")[0])
    return b[12:] if b[:12] == V4MAPPED_PREFIX else b


def _close_with_rst(family: int, fd: int) -> None:
    """Close an accepted connection with an RST (SO_LINGER 0), so that nothing remains.

    (Connections accepted from a listener that :func:`_listening` gave SO_LINGER 0 inherit
    it, and are closed with a bare ``os.close``.)"""
    conn = socket.SocketType(family, socket.SOCK_STREAM, 0, fd)  # the C type: owns fd now
    try:  # noqa: SIM105 - once per flow: suppress() costs more than the syscall's Python
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    except OSError:
        pass
    conn.close()


class _Prober:
    """One probe() call: an epoll set over the injectors and the labelled sockets, and the
    batch being run through it (:meth:`run`). Handlers read everything ready on their fd and
    say whether any flow made progress."""

    def __init__(
        self,
        ns: NetNS,
        tcp: list[tuple[str, socket.socket]],
        udp: list[tuple[str, socket.socket]],
        lingering: Collection[socket.socket] = (),
    ) -> None:
        self.pending: dict[Key, _Pending] = {}
        self.tokens: dict[bytes, _Pending] = {}
        self.unresolved = 0
        self.injector_fds = [inj._fd() for inj in injectors(ns).values()]
        self.handlers: dict[int, Callable[[], bool]] = {}
        for fd in self.injector_fds:
            self.handlers[fd] = functools.partial(self._read_replies, fd)
        for lbl, s in tcp:
            lingers = s in lingering
            self.handlers[s.fileno()] = functools.partial(self._accept_all, lbl, s, lingers)
        for lbl, s in udp:
            self.handlers[s.fileno()] = functools.partial(self._receive_all, lbl, s)
        self.ep = select.epoll()
        for fd in self.handlers:
            self.ep.register(fd, select.EPOLLIN)

    def close(self) -> None:
        self.ep.close()

    # -- one batch ---------------------------------------------------------------------

    def run(self, batch: list[_Pending], settle: float, timeout: float) -> None:
        """Inject every flow of ``batch`` and wait for the replies: each gets its verdict."""
        self.pending = {p.addr[:3]: p for p in batch}
        self.tokens = {}
        self.unresolved = len(batch)
        # Handle replies every few packets: a socket's receive buffer holds ~256 datagrams.
        for i, p in enumerate(batch):
            if i and i % 64 == 0:
                self.pump(0)
            proto, src, sport, dst, dport = p.addr
            if proto == PROTO_TCP:
                self._send(p, packets.tcp(src, dst, sport, dport, TCP_SYN, seq=ISN))
            else:
                token = TOKEN + str(i).encode()
                self.tokens[token] = p
                self._send(p, packets.udp(src, dst, sport, dport, token))
        hard = time.monotonic() + timeout
        quiet_until = time.monotonic() + settle
        while self.unresolved and time.monotonic() < hard:
            wait = max(0.0, min(quiet_until, hard) - time.monotonic())
            had_events, progressed = self.pump(wait)
            if progressed:
                quiet_until = time.monotonic() + settle
            elif not had_events and time.monotonic() >= quiet_until:
                break
        self._finish(batch)
        for fd in self.injector_fds:  # the RSTs of closed probe connections
            _discard_queued(fd)

    def pump(self, wait: float) -> tuple[bool, bool]:
        """Handle what is ready (waiting up to ``wait`` s): (any events, any progress)."""
        events = self.ep.poll(wait)
        progressed = False
        for fd, _ in events:
            progressed |= self.handlers[fd]()
        return bool(events), progressed

    def _send(self, p: _Pending, pkt: bytes) -> None:
        os.write(p.fd, pkt)
        if p.trace is not None:
            p.trace.append(("in", pkt, time.time()))

    def _resolve(self, p: _Pending, verdict: str) -> None:
        if p.verdict is None:
            p.verdict = verdict
            self.unresolved -= 1
        p.state = DONE

    def _finish(self, batch: list[_Pending]) -> None:
        """Give every unresolved flow its verdict, and reset half-open connections."""
        for p in batch:
            if p.verdict is not None:
                continue
            if p.state == SYNACK:
                _, src, sport, dst, dport = p.addr
                self._send(p, packets.tcp(src, dst, sport, dport, TCP_RST, seq=ISN + 1))
                self._resolve(p, UNLABELLED)
            else:
                self._resolve(p, NONE)

    # -- handlers ----------------------------------------------------------------------

    def _read_replies(self, fd: int) -> bool:
        progressed = False
        while True:
            try:
                pkt = os.read(fd, 65536)
            except BlockingIOError:
                return progressed
            progressed |= self.on_packet(pkt)

    def on_packet(self, pkt: bytes) -> bool:
        """A packet the namespace sent to a client."""
        fields = packets.tcp_fields(pkt)  # fast path: most replies are plain TCP
        if fields is not None:
            return self._on_tcp(pkt, *fields)
        r = packets.decode(pkt)
        if r is None:
            return False
        if r.icmp is not None:  # quotes our packet: client -> local
            p = self.pending.get((r.proto, r.src, r.sport))
            if p is None or p.state == DONE:
                return False
            if p.trace is not None:
                p.trace.append(("out", pkt, time.time()))
            self._resolve(p, ICMP)
            return True
        if r.proto == PROTO_TCP:  # with IPv4 options or IPv6 extension headers
            return self._on_tcp(pkt, r.dst, r.dport, r.seq, r.flags)
        p = self.pending.get((r.proto, r.dst, r.dport))
        if p is not None and p.state != DONE and p.trace is not None:
            p.trace.append(("out", pkt, time.time()))
        return False

    def _on_tcp(self, pkt: bytes, dst: bytes, dport: int, seq: int, flags: int) -> bool:
        p = self.pending.get((PROTO_TCP, dst, dport))
        if p is None or p.state == DONE:  # e.g. the RST of a probe connection we closed
            return False
        if p.trace is not None:
            p.trace.append(("out", pkt, time.time()))
        if p.state != SENT:
            return False
        if flags & TCP_RST:
            self._resolve(p, RST)
            return True
        if flags & _SYN_ACK == _SYN_ACK:
            _, src, sport, dst, dport = p.addr
            ack = (seq + 1) & 0xFFFFFFFF
            self._send(p, packets.tcp(src, dst, sport, dport, TCP_ACK, seq=ISN + 1, ack=ack))
            p.state = SYNACK
            return True
        return False

    def _accept_all(self, label: str, listener: socket.socket, lingers: bool = False) -> bool:
        """Accept every connection queued on a labelled listener: reset it, record the verdict."""
        progressed = False
        accept = listener._accept  # type: ignore[attr-defined]  # (fd, peer): no socket.socket
        family = listener.family
        while True:
            try:
                fd, peer = accept()
            except (BlockingIOError, InterruptedError):
                return progressed
            if lingers:  # SO_LINGER 0 inherited from the listener: close() sends the RST
                os.close(fd)
            else:
                _close_with_rst(family, fd)
            try:
                p = self.pending.get((PROTO_TCP, _sockaddr_ip(peer[0]), peer[1]))
            except (OSError, IndexError, TypeError):
                continue
            if p is not None and p.verdict is None:
                self._resolve(p, label)
                progressed = True

    def _receive_all(self, label: str, sock: socket.socket) -> bool:
        """Read every datagram queued on a labelled UDP socket; a token names its flow."""
        progressed = False
        while True:
            try:
                data = sock.recv(256, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return progressed
            except OSError:  # a pending ICMP error on a connected socket; now cleared
                continue
            p = self.tokens.get(data)
            if p is not None and p.verdict is None:
                self._resolve(p, label)
                progressed = True


def _discard_queued(fd: int) -> None:
    """Read and drop whatever an injector has queued."""
    while True:
        try:
            os.read(fd, 65536)
        except BlockingIOError:
            return


def _batches(keys: list[Key], size: int) -> list[list[int]]:
    """Split indices into ``keys`` into batches of at most ``size`` in which no key repeats.

    First fit, in order: each goes to the first batch that has room and lacks its key. A
    key's occurrences land in ever later batches (a batch it skipped stays full or keeps the
    key), so the search starts after the key's last batch and skips full batches through
    ``free``, a union-find "next batch with room" pointer: linear overall (amortised, path
    halving), however many flows share a client.
    """
    batches: list[list[int]] = []
    last: dict[Key, int] = {}  # the batch each key went to last
    free = [0]  # free[b] == b: batch b has room (b == len(batches): a new one); else look later
    for i, k in enumerate(keys):
        b = last.get(k, -1) + 1
        while free[b] != b:  # skip full batches, halving the path as we go
            free[b] = free[free[b]]
            b = free[b]
        if b == len(batches):
            batches.append([])
            free.append(b + 1)
        batches[b].append(i)
        last[k] = b
        if len(batches[b]) >= size:
            free[b] = b + 1
    return batches


class Verdicts(dict[Any, str]):
    """``{flow: verdict}`` (a dict: compares equal to one) with ``.evidence``: ``{flow:
    Evidence}``, what the kernel recorded for each (see :mod:`bindlab.bpf.why`)."""

    evidence: Mapping[Any, Evidence]


def probe(
    ns: NetNS,
    flows: Iterable[str | Flow],
    *,
    settle: float = 0.05,
    timeout: float = 5.0,
    batch: int = 512,
    trace: dict[Any, Trace] | None = None,
    evidence: bool | dict[Any, Evidence] = False,
) -> dict[Any, str]:
    """Inject ``flows`` into ``ns`` and return ``{flow: verdict}``, keyed as given.

    ``settle`` is how long to wait for a reply that has not come (it bounds ``NONE``
    verdicts); ``timeout`` caps a batch. With ``trace``, the packets exchanged for each
    flow are stored there as ``[("in"|"out", bytes, time), ...]``. With ``evidence`` (True, or
    a dict to fill like ``trace``), the kernel's evidence for each verdict is recorded by BPF
    tracepoints and returned beside it: the result is then a :class:`Verdicts` whose
    ``.evidence`` maps each flow to a :class:`~bindlab.bpf.why.Evidence`. Off by default:
    nothing is loaded and nothing costs.

    ``flows`` may be the ``{flow: expected verdict}`` dict a test compares the result with
    (``assert ns.probe(rows) == rows``): the expected verdicts are then kept for reports
    (:func:`expectations`), and the packets of every flow that got another verdict too
    (:func:`mismatched_packets`).
    """
    given = list(flows)
    expected = _expected_of(flows)
    parsed = [Flow.parse(f) for f in given]  # every syntax error before any injection
    if len(set(parsed)) != len(parsed):
        dup = next(f for f, n in Counter(parsed).items() if n > 1)
        raise ConfigError(f"flow {dup} is given twice in one probe")
    made = injectors(ns)
    if DEFAULT_INJECTOR not in made:
        raise ConfigError(f"{ns!r} has no default injector (Namespace.probe makes it)")
    fds = {None: made[DEFAULT_INJECTOR]._fd()} | {n: inj._fd() for n, inj in made.items()}
    recording = ns.stash.get(_RECORDING)
    tracing = trace is not None or expected is not None or recording is not None
    pending = []
    for f in parsed:  # every unknown device before any injection, too
        fd = fds.get(f.dev)
        if fd is None:
            raise ConfigError(
                f"flow {f}: no injector named {f.dev!r}; create it with ns.add_injector({f.dev!r})"
            )
        pending.append(_Pending(f, fd, [] if tracing else None))
    recorder = _recorder(ns) if evidence is not False else None
    with (
        programs.frozen(ns),  # a program's own processes must not take the flows first
        _listening(ns) as (tcp_socks, udp_socks, lingering),
        contextlib.closing(_Prober(ns, tcp_socks, udp_socks, lingering)) as prober,
        recorder or contextlib.nullcontext(),
    ):
        for indices in _batches([p.addr[:3] for p in pending], batch):
            prober.run([pending[i] for i in indices], settle, timeout)
            if recorder is not None:
                recorder.collect()
    verdicts = [p.verdict or NONE for p in pending]
    if trace is not None:
        for g, p in zip(given, pending, strict=True):
            trace[g] = p.trace or []
    if recording is not None or expected is not None:
        names = [str(f) for f in parsed]
        if recording is not None:
            recording.extend((n, p.trace or []) for n, p in zip(names, pending, strict=True))
        if expected is not None:
            ns.stash.setdefault(_EXPECTED, dict).update(zip(names, expected, strict=True))
            bad = ns.stash.setdefault(_MISMATCHED, dict)
            for n, exp, got, p in zip(names, expected, verdicts, pending, strict=True):
                if got != exp:
                    bad[n] = p.trace or []
    ns.stash.setdefault(_OBSERVATIONS, list).append((parsed, verdicts))
    if recorder is None:
        return dict(zip(given, verdicts, strict=True))
    result = Verdicts(zip(given, verdicts, strict=True))
    result.evidence = recorder.report(given, parsed, verdicts)
    if isinstance(evidence, dict):
        evidence.update(result.evidence)
    return result


def _recorder(ns: NetNS) -> Recorder:
    from bindlab.bpf.why import Recorder  # BPF is loaded only when evidence is asked for

    return Recorder(ns)


def _expected_of(flows: Iterable[str | Flow]) -> list[str] | None:
    """The expected verdicts of a ``{flow: verdict}`` dict, in order; None for other input."""
    if not isinstance(flows, Mapping):
        return None
    values = list(flows.values())
    return values if all(isinstance(v, str) for v in values) else None


def expectations(ns: NetNS) -> dict[str, str]:
    """``{flow: expected verdict}`` of every probe of ``ns`` given a ``{flow: verdict}`` dict."""
    return ns.stash.setdefault(_EXPECTED, dict)


def mismatched_packets(ns: NetNS) -> dict[str, Trace]:
    """The packets of each flow whose verdict was not the one its dict expected."""
    return ns.stash.setdefault(_MISMATCHED, dict)


def record_packets(ns: NetNS) -> list[tuple[str, Trace]]:
    """From now on keep every probed flow's packets (for pcaps): the list they go to."""
    return ns.stash.setdefault(_RECORDING, list)


def observations(ns: NetNS) -> list[tuple[str, str]]:
    """Every ``(flow, verdict)`` probed in ``ns``, in order (results files read them)."""
    return [
        (str(f), v)
        for flows, verdicts in ns.stash.get(_OBSERVATIONS) or ()
        for f, v in zip(flows, verdicts, strict=True)
    ]


@contextlib.contextmanager
def _listening(ns: NetNS) -> Any:
    """The labelled listeners and UDP sockets, non-blocking for the probe's duration, and
    the listeners given SO_LINGER 0 for it (the connections they accept inherit it, so the
    probe closes them with an RST by a bare ``close``); their own linger comes back after."""
    tcp = [
        (lbl, s)
        for lbl, s in labelled(ns, socket.SOCK_STREAM)
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    ]
    udp = labelled(ns, socket.SOCK_DGRAM)
    saved = [(s, s.gettimeout()) for _, s in tcp + udp]
    lingers: dict[socket.socket, bytes] = {}
    for s, _ in saved:
        s.setblocking(False)
    for _, s in tcp:
        with contextlib.suppress(OSError):
            before = s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, len(LINGER_RST))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            lingers[s] = before
    try:
        yield tcp, udp, set(lingers)
    finally:
        for s, t in saved:
            with contextlib.suppress(OSError):
                s.settimeout(t)
        for s, before in lingers.items():
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, before)


def distribution(ns: NetNS, flows: Iterable[str | Flow], **kw: Any) -> dict[str, int]:
    """``{verdict: count}`` over ``flows`` (for SO_REUSEPORT groups and the like)."""
    return dict(Counter(probe(ns, flows, **kw).values()))
