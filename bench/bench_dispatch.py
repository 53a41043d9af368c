"""Probe throughput with the prefix dispatcher (10,000 bindings) attached vs no program.

Same namespace, same listener (bound to 192.0.2.10:80, so the regular lookup finds it when
no program runs), same pre-parsed TCP flows; rounds alternate attached / detached so drift
hits both sides (and
each side goes first in half the rounds). With the dispatcher attached, every SYN runs the sk_lookup program: two
LPM-trie lookups among 10,000 bindings, a SOCKMAP lookup and bpf_sk_assign.
Run: ``python bench/bench_dispatch.py [--flows N] [--rounds R] [--bindings B]``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time

from bench_probe import flows_for, probe_round  # bench/ is on sys.path when run as a script
from bindlab import Namespace
from bindlab.bpf import sk_lookup


def fill(ns: Namespace, web: socket.socket, n: int) -> float:
    """``n - 1`` distractor bindings (/32, /24 and /16 prefixes in 10.0.0.0/8, some ports,
    some any-port) plus the one the flows match; returns the seconds it took."""
    d = sk_lookup(ns, max_bindings=n + 16, max_sockets=64)
    other = ns.tcp_listener("127.0.0.1:8080", label="other")
    t = time.perf_counter()
    for i in range(n - 1):
        a, b, c = (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF
        prefix = (f"10.{a}.{b}.{c}/32", f"10.{b}.{c}.0/24", f"10.{c}.0.0/16")[i % 3]
        port = (80, 443, 0, 53)[i % 4]
        d.bind("tcp", prefix, port, other)
    d.bind("tcp", "192.0.2.0/24", 80, web)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--bindings", type=int, default=10_000)
    args = ap.parse_args()
    with Namespace() as ns:
        ns.add_local_route("192.0.2.0/24")
        web = ns.tcp_listener("192.0.2.10:80", label="web")
        ns.injector  # noqa: B018 - create the TUN and routes outside the clock
        took = fill(ns, web, args.bindings)
        d = sk_lookup(ns)
        probe_round(ns, flows_for(999, 500))  # warm-up
        on, off = [], []
        for r in range(args.rounds):
            for attached in (r % 2 == 0, r % 2 == 1):  # alternate which side goes first
                if attached:
                    d.attach()
                    on.append(probe_round(ns, flows_for(2 * r, args.flows)))
                else:
                    d.detach()
                    off.append(probe_round(ns, flows_for(2 * r + 1, args.flows)))
        d.attach()
        lookups = d.lookups("tcp", "192.0.2.0/24", 80)
    mon, moff = statistics.median(on), statistics.median(off)
    print(f"# sk_lookup dispatcher, {args.flows} TCP flows x {args.rounds} rounds, medians")
    print(f"bindings:               {args.bindings:9d} (inserted in {took:.2f} s)")
    print(f"no program:             {moff:9.0f} flows/s")
    print(
        f"dispatcher attached:    {mon:9.0f} flows/s ({lookups} lookups of the 192.0.2.0/24 binding)"
    )
    print(f"ratio attached/none:    {mon / moff:9.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
