"""The address-space view of a scenario: what was probed where, and nothing more.

For each (protocol, port), each prefix the scenario declared (its local routes) holds the
destinations that were probed in it, each with the verdicts its flows got. Nothing is said
about the addresses between probed ones: the kernel was not asked about them. A destination
whose flows expect any member of a SO_REUSEPORT group (``["r1", "r2"]``) is one point with
that group, whichever members the hash picked: never a split of the address space. Destinations outside every declared prefix are
listed under ``None``.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field

from bindlab.flow import Flow, IPAddress
from bindlab.results import PASS, ScenarioResult

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class Point:
    """One probed destination address: how many of its flows got each verdict."""

    addr: IPAddress
    verdicts: Counter[str] = field(default_factory=Counter)
    ok: bool = True  # every flow to it as expected
    members: set[str] = field(default_factory=set)  # a group's labels, as the rows expect them

    @property
    def group(self) -> bool:
        """Its flows expect any of several sockets (``["r1", "r2"]``): a reuseport group,
        whichever member the hash picked."""
        return len(self.members) > 1

    @property
    def flows(self) -> int:
        return sum(self.verdicts.values())


@dataclass
class Space:
    """A declared prefix (or None: outside every declared one) and its probed points."""

    prefix: Network | None
    points: list[Point]

    def offset(self, p: Point) -> float:
        """Where ``p`` lies in the prefix, from 0 (network address) to 1 (last address)."""
        if self.prefix is None or self.prefix.num_addresses == 1:
            return 0.0
        first = int(self.prefix.network_address)
        return (int(p.addr) - first) / (self.prefix.num_addresses - 1)


def view(res: ScenarioResult) -> dict[tuple[str, int], list[Space]]:
    """``{(proto, port): [Space, ...]}``: probed points per declared prefix, sorted."""
    nets: list[Network] = [ipaddress.ip_network(p, strict=False) for p in res.prefixes]
    found: dict[tuple[str, int], dict[Network | None, dict[IPAddress, Point]]] = {}
    for r in res.rows:
        if r.kind != "flow" or not r.observed:
            continue
        try:
            f = Flow.parse(r.name)
        except ValueError:  # a results file may hold rows that are not flows
            continue
        net = next((n for n in nets if f.dst in n), None)
        points = found.setdefault((f.proto, f.dport), {}).setdefault(net, {})
        p = points.setdefault(f.dst, Point(f.dst))
        p.verdicts[r.observed] += 1
        p.ok = p.ok and r.status == PASS
        if "|" in r.expected:
            p.members.update(r.expected.split("|"))
    out: dict[tuple[str, int], list[Space]] = {}
    for key in sorted(found):
        spaces = []
        for net in sorted(found[key], key=lambda n: (n is None, n.version if n else 0, str(n))):
            pts = sorted(found[key][net].values(), key=lambda p: (p.addr.version, int(p.addr)))
            spaces.append(Space(net, pts))
        out[key] = spaces
    return out
