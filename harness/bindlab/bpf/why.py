"""Why this socket: each flow's verdict with the kernel's own evidence beside it.

A :class:`Recorder` runs beside one probe: before any packet, it takes every labelled
socket's ``SO_COOKIE`` (a cookie is 0 until someone asks for it) and inode, attaches the
tracer (:mod:`bindlab.bpf.evidence`) and snapshots the namespace's sockets (the
competitors); between batches :meth:`Recorder.collect` reads the ring buffer; at the end
:meth:`Recorder.evidence` matches events to flows by (protocol, 4-tuple), never by order.

An :class:`Evidence` names the socket the kernel chose (by label), the pass that decided
(``sk_lookup`` and its binding, ``connected``, ``device-bound``, ``exact`` or ``wildcard``,
``reuseport k of n``, or ``no socket`` with the drop reason), the hook it was read at, the
raw fields, and the other sockets on the port::

    won: spec4 (exact 192.0.2.10:80, reuseport group of 1) [net_dev_queue];
    also listening: wild4-a, wild4-b (0.0.0.0:80, reuseport group of 2)

Where the kernel cannot show something (no tracepoint, no BTF), :attr:`Evidence.missing`
says why, and the verdict stands as before.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bindlab.bpf import evidence as kernel
from bindlab.bpf.query import cookie
from bindlab.errors import FeatureMissing, HarnessError
from bindlab.flow import ICMP, RESERVED_VERDICTS, RST, Flow
from bindlab.netns import StashKey
from bindlab.sockets import labels

if TYPE_CHECKING:
    from bindlab.netns import NetNS

HOOKS = {
    kernel.EV_SYNACK: "net_dev_queue (SYN-ACK of the listener's request socket)",
    kernel.EV_DROP: "kfree_skb",
    kernel.EV_UDP: "sk_data_ready",
}
_LOG: StashKey[list[Report]] = StashKey("evidence")


@dataclass(frozen=True)
class Evidence:
    """What the kernel recorded for one flow; ``str()`` is the one-line summary."""

    socket: str | None  # label of the socket the kernel chose (None: none, or not seen)
    path: tuple[str, ...] = ()  # the deciding passes, outermost first
    hook: str = ""  # where it was read
    fields: dict[str, Any] = field(default_factory=dict, compare=False)
    others: tuple[str, ...] = ()  # the competing sockets, grouped
    missing: str = ""  # why there is no evidence

    @property
    def no_socket(self) -> bool:
        """The lookup found no socket (the RST and ICMP verdicts)."""
        return bool(self.path) and self.path[0].startswith("no socket")

    def __str__(self) -> str:
        if self.missing:
            return f"no evidence: {self.missing}"
        head = (
            f"{' '.join(self.path)}"
            if self.no_socket
            else (f"won: {self.socket} ({', '.join(self.path)})")
        )
        text = f"{head} [{self.hook.split(' ')[0]}]"
        if self.others:
            verb = "listening" if self.fields.get("proto") == 6 else "bound"
            text += f"; also {verb}: {'; '.join(self.others)}"
        return text


def disagreement(verdict: str, ev: Evidence) -> str | None:
    """Why ``ev`` contradicts ``verdict`` (None: it agrees, or there is no evidence).

    A labelled verdict must be the socket the kernel chose; RST and ICMP must be a lookup
    that found no socket. Other verdicts (NONE, UNLABELLED) are not checked."""
    if ev.missing or verdict in RESERVED_VERDICTS:
        if verdict in (RST, ICMP) and not ev.missing and not ev.no_socket:
            return f"verdict {verdict} but the kernel chose {ev.socket}: {ev}"
        return None
    if ev.socket != verdict:
        return f"verdict {verdict!r} but the kernel's evidence says {ev}"
    return None


def log(ns: NetNS) -> list[Report]:
    """The evidence of every probe of ``ns`` that asked for it, in order."""
    return ns.stash.setdefault(_LOG, list)


def entries(ns: NetNS) -> Iterator[tuple[Flow, str, Evidence]]:
    """Every ``(flow, verdict, evidence)`` recorded in ``ns``, in order (results files and
    the plugin's agreement check read it)."""
    for report in log(ns):
        yield from report.entries()


class Report(Mapping[Any, Evidence]):
    """One probe's ``{flow as given: Evidence}``: each is built when first read (a probe
    pays for reading the kernel's records, not for the text of evidence nobody reads)."""

    def __init__(
        self, recorder: Recorder, given: list[Any], flows: list[Flow], verdicts: list[str]
    ) -> None:
        self._recorder, self._given, self._flows, self._verdicts = recorder, given, flows, verdicts
        self._index = {g: i for i, g in enumerate(given)}
        self._built: dict[int, Evidence] = {}

    def _at(self, i: int) -> Evidence:
        ev = self._built.get(i)
        if ev is None:
            ev = self._built[i] = self._recorder.evidence(self._flows[i], self._verdicts[i])
        return ev

    def __getitem__(self, flow: Any) -> Evidence:
        return self._at(self._index[flow])

    def __iter__(self) -> Iterator[Any]:
        return iter(self._given)

    def __len__(self) -> int:
        return len(self._given)

    def entries(self) -> Iterator[tuple[Flow, str, Evidence]]:
        """``(flow, verdict, evidence)`` in probe order."""
        for i, (f, v) in enumerate(zip(self._flows, self._verdicts, strict=True)):
            yield f, v, self._at(i)


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class Recorder:
    """Evidence for one probe of ``ns``; a context manager (attaches, then detaches)."""

    def __init__(self, ns: NetNS) -> None:
        self.ns = ns
        self.events: dict[bytes, list[bytes]] = defaultdict(list)  # records by record_key
        self._cache: dict[bytes, Evidence] = {}  # by the record's socket part: shared
        self.by_cookie: dict[int, str] = {}
        self.by_ino: dict[int, str] = {}
        for _fd, (label, sock) in list(labels(ns).items()):
            with contextlib.suppress(OSError):
                self.by_cookie[cookie(sock)] = label
                self.by_ino[os.fstat(sock.fileno()).st_ino] = label
        self.unavailable = ""
        self._stack = contextlib.ExitStack()
        self.session: kernel.Session | None = None
        self.sockets: list[kernel.SockRec] = []
        self.ifnames: dict[int, str] = {}
        self.bindings: list[Any] = []  # the dispatcher's, most specific first
        try:
            self.tracer: kernel.Tracer | None = kernel.tracer()
        except (FeatureMissing, HarnessError, OSError) as e:
            self.tracer, self.unavailable = None, str(e).splitlines()[0]

    def __enter__(self) -> Recorder:
        if self.tracer is not None:
            self.session = self._stack.enter_context(self.tracer.session(self.ns))
            self.sockets = self.session.sockets()
            # what evidence is spelled with, as it is now (evidence is built when read)
            with self.ns.enter():
                self.ifnames = dict(socket.if_nameindex())
            from bindlab.bpf import dispatcher

            d = dispatcher._dispatchers.get(self.ns)  # bindlab's own, if the probe has one
            self.bindings = d.bindings() if d is not None and not d.closed else []
        return self

    def _ifname(self, index: int) -> str:
        return self.ifnames.get(index, f"if{index}")

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.collect()
        self._stack.close()

    def collect(self) -> None:
        """Read what the kernel recorded so far (call between batches: the ring is finite)."""
        if self.session is None:
            return
        events = self.events
        for raw in self.session.read():  # record_key, inlined: once per event
            events[raw[1:3] + raw[16:20] + raw[64:96]].append(raw)

    def report(self, given: list[Any], flows: list[Flow], verdicts: list[str]) -> Report:
        """``{flow as given: Evidence}``, each built when first read; logged for the results
        file and the plugin's check (:func:`entries`)."""
        out = Report(self, given, flows, verdicts)
        log(self.ns).append(out)
        return out

    # -- per flow ----------------------------------------------------------------------------

    def label(self, cookie: int, ino: int) -> str:
        return self.by_cookie.get(cookie) or self.by_ino.get(ino) or f"unlabelled (cookie {cookie})"

    def evidence(self, flow: Flow, verdict: str) -> Evidence:
        """The evidence for ``flow`` (whose verdict was ``verdict``)."""
        if self.tracer is None:
            return Evidence(None, missing=f"EVIDENCE unavailable: {self.unavailable}")
        chosen = drop = lookup = None
        for raw in self.events.get(kernel.flow_key(flow.key), ()):
            kind = raw[0]
            if kind == kernel.EV_SYNACK or kind == kernel.EV_UDP:
                chosen = raw
            elif kind == kernel.EV_DROP and (raw[1] == 17 or raw[5] & 0x12 == 2):  # a SYN
                drop = raw
            elif kind == kernel.EV_LOOKUP:
                lookup = raw
        if chosen is not None:
            if lookup is not None:  # the binding depends on the flow: not shared
                return self._won(flow, kernel.Event.decode(chosen), True)
            # Flows the same socket took share one Evidence: keyed by everything but the
            # flow's own addresses (kind..families, ports, socket fields; the peer if connected)
            ck = chosen[:4] + chosen[18:64] + chosen[96:112]
            if chosen[22:24] != b"\0\0":
                ck += chosen[64:80]
            ev = self._cache.get(ck)
            if ev is None:
                ev = self._cache[ck] = self._won(flow, kernel.Event.decode(chosen), False)
            return ev
        if drop is not None:
            ck = b"drop" + drop[:2] + drop[12:16] + drop[18:20] + drop[28:32]
            ev = self._cache.get(ck)
            if ev is None:
                ev = self._cache[ck] = self._dropped(flow, kernel.Event.decode(drop))
            return ev
        return Evidence(None, missing=self._why_none(flow, verdict))

    def _dropped(self, flow: Flow, d: kernel.Event) -> Evidence:
        reason = kernel.drop_reasons().get(d.reason, str(d.reason))
        return Evidence(
            None,
            (f"no socket (drop reason {reason})",),
            HOOKS[kernel.EV_DROP],
            {"proto": d.proto, "reason": reason, "iif": d.iif},
            self._others(flow, None),
        )

    def _why_none(self, flow: Flow, verdict: str) -> str:
        tiers = kernel.tiers()
        if flow.proto == "udp" and tiers["on_ready"]:
            return f"EVIDENCE_UDP unavailable: {tiers['on_ready']}"
        if flow.proto == "tcp" and tiers["on_synack"]:
            return f"EVIDENCE_TCP unavailable: {tiers['on_synack']}"
        if verdict in (RST, ICMP):
            return "no NO_SOCKET drop was recorded for this flow"
        return "nothing recorded for this flow (no lookup reached a socket; syncookies?)"

    def _won(self, flow: Flow, e: kernel.Event, lookup: bool) -> Evidence:
        label = self.label(e.cookie, e.ino)
        path: list[str] = []
        if lookup:
            path.append(self._binding(flow, label))
        where = _endpoint(e.sk_addr, e.sk_port)
        if e.family == socket.AF_INET and e.sk_family == socket.AF_INET6:
            where += " (an IPv6 socket taking IPv4)"
        if e.sk_dport:
            path.append(f"connected {where} <- {_endpoint(e.raddr, e.sk_dport)}")
        elif e.sk_addr in ("0.0.0.0", "::"):
            path.append(f"wildcard {where}")
        else:
            path.append(f"exact {where}")
        if e.sk_dev:
            path.append(f"device-bound {self._ifname(e.sk_dev)}")
        if e.rp_n:
            k = "?" if e.rp_k < 0 else str(e.rp_k)
            path.append(f"reuseport {k} of {e.rp_n}" + (" (BPF program)" if e.has_prog else ""))
        fields = {
            "proto": e.proto,
            "cookie": e.cookie,
            "inode": e.ino or None,  # read only when the cookie is 0
            "family": "inet6" if e.sk_family == socket.AF_INET6 else "inet",
            "bound": where,
            "bound_dev_if": e.sk_dev,
            "reuseport_id": e.rp_id if e.rp_n else None,
            "reuseport_n": e.rp_n,
            "reuseport_k": e.rp_k,
            "sk_lookup": lookup,
            "ingress_ifindex": e.iif,
        }
        return Evidence(label, tuple(path), HOOKS[e.kind], fields, self._others(flow, e))

    def _binding(self, flow: Flow, label: str) -> str:
        """``sk_lookup``, with the dispatcher binding that matched if bindlab's made it."""
        for b in self.bindings:  # most specific first
            if label in b.labels and b.rule.matches(flow.proto, flow.dst, flow.dport):
                return f"sk_lookup binding {b.rule}"
        return "sk_lookup"

    def _others(self, flow: Flow, won: kernel.Event | None) -> tuple[str, ...]:
        """The other sockets on the flow's port, grouped by address, device and group."""
        proto = 6 if flow.proto == "tcp" else 17
        groups: dict[tuple[str, int, int, int, str], list[str]] = defaultdict(list)
        for s in self.sockets:
            if s.proto != proto or s.port != flow.dport:
                continue
            if won is not None and (s.cookie, s.ino) == (won.cookie, won.ino):
                continue
            gid = s.rp_id if s.rp_n else -1
            peer = _endpoint(s.daddr, s.dport) if s.dport else ""
            groups[(s.addr, s.dev, gid, s.rp_n, peer)].append(self.label(s.cookie, s.ino))
        out = []
        for (addr, dev, gid, n, peer), names in groups.items():
            bits = [_endpoint(addr, flow.dport)]
            if peer:
                bits.append(f"connected to {peer}")
            if dev:
                bits.append(f"device {self._ifname(dev)}")
            if gid >= 0:
                bits.append(f"reuseport group of {n}")
            out.append(f"{', '.join(sorted(names))} ({', '.join(bits)})")
        return tuple(sorted(out))
