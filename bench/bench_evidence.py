"""Probe throughput with the kernel's evidence on vs off, side by side.

The same namespace (a TCP listener and a UDP socket, each in a reuseport group of 2 beside a
specific socket, so the evidence walks a group and lists competitors), the same number of
fresh flows per round; rounds interleave off and on so both see the same machine load.
Every flow's verdict is checked, and with evidence on every evidence is checked against its
verdict (a round whose evidence is missing or wrong would do less work and flatter itself).
Prints medians and the on/off ratio per protocol; the target is >= 0.85.
Run: ``python bench/bench_evidence.py [--flows N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bindlab import Flow, Namespace
from bindlab.bpf.why import disagreement
from bindlab.flow import RESERVED_VERDICTS


def flows_for(round_: int, n: int, proto: str, port: int) -> list[Flow]:
    return [
        Flow.parse(
            f"{proto} 198.18.{i // 250}.{i % 250 + 1}:{1024 + round_ * 7 + i % 50000} "
            f"-> 192.0.2.{10 + i % 2}:{port}"
        )
        for i in range(n)
    ]


def one(ns: Namespace, flows: list[Flow], evidence: bool) -> float:
    t = time.perf_counter()
    res = ns.probe(flows, evidence=evidence)
    dt = time.perf_counter() - t
    bad = [f for f, v in res.items() if v in RESERVED_VERDICTS]
    if bad:
        raise SystemExit(f"{len(bad)} flows got no socket, e.g. {bad[0]}: {res[bad[0]]}")
    if evidence:
        for f, v in res.items():
            ev = res.evidence[f]  # type: ignore[attr-defined]
            if ev.missing or disagreement(v, ev) is not None:
                raise SystemExit(f"{f}: verdict {v}, evidence {ev}")
    return len(flows) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=2000, help="flows per round (default 2000)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds per side (default 7)")
    args = ap.parse_args()
    with Namespace() as ns:
        ns.add_local_route("192.0.2.0/24")
        ns.tcp_listener("192.0.2.10:80", "spec", reuseport=True)
        ns.tcp_listener("0.0.0.0:80", "wild-a", reuseport=True)
        ns.tcp_listener("0.0.0.0:80", "wild-b", reuseport=True)
        ns.udp_socket("192.0.2.10:53", "uspec", reuseport=True)
        ns.udp_socket("0.0.0.0:53", "uwild-a", reuseport=True)
        ns.udp_socket("0.0.0.0:53", "uwild-b", reuseport=True)
        one(ns, flows_for(99, 200, "tcp", 80), True)  # warm up: load the BPF object once
        for proto, port in (("tcp", 80), ("udp", 53)):
            rates: dict[bool, list[float]] = {False: [], True: []}
            for r in range(args.rounds):
                for ev in (False, True) if r % 2 == 0 else (True, False):
                    rates[ev].append(one(ns, flows_for(r * 2 + ev, args.flows, proto, port), ev))
            off, on = statistics.median(rates[False]), statistics.median(rates[True])
            print(
                f"{proto}: evidence off {off:8.0f} flows/s, on {on:8.0f} flows/s "
                f"(medians of {args.rounds} x {args.flows}); ratio {on / off:.2f}"
            )


if __name__ == "__main__":
    main()
