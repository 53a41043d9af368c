"""Real programs as subjects: what freezing the program during a probe costs.

Side by side in one run, medians: a freeze + thaw of a two-process program (its cgroup, and
the SIGSTOP/SIGCONT session fallback); one probe of ``--flows`` TCP flows to a program's
listener (frozen for the probe) vs the same flows to a listener the test made itself; and
``spawn`` until the sockets are labelled. Run: ``python bench/bench_programs.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from bindlab import Namespace
from bindlab.process import Session, cgroup2_root

SERVER = (
    "import os, socket, time; s = socket.socket(); "
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('192.0.2.1', 80)); "
    "s.listen(4096); os.fork(); time.sleep(600)"
)


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--flows", type=int, default=1000)
    args = ap.parse_args()
    flows = [
        f"tcp 198.18.{i // 250}.{i % 250 + 1}:{1000 + i} -> 192.0.2.1:80" for i in range(args.flows)
    ]
    kinds = {"session": Session} | ({"cgroup": None} if cgroup2_root() else {})
    for kind, group in kinds.items():
        print(kind, *measure(group, flows, args.rounds))


def measure(group: Callable[[], Session] | None, flows: list[str], rounds: int) -> list[str]:
    with Namespace() as ns:  # first the test's own listener, in a namespace like the other
        ns.add_local_route("192.0.2.0/24")
        ns.tcp_listener("192.0.2.1:80", "own")
        own_probe = median_ms(lambda: ns.probe(flows), 5)
    with Namespace() as ns:
        ns.add_local_route("192.0.2.0/24")
        argv = [sys.executable, "-c", SERVER]
        spawn = median_ms(
            lambda: ns.spawn(argv, "srv", group=group and group()).stop(), max(3, rounds // 5)
        )
        prog = ns.spawn(argv, "srv", group=group and group())

        def freeze() -> None:
            with prog.process.frozen():
                pass

        frozen = median_ms(freeze, rounds)
        program_probe = median_ms(lambda: ns.probe(flows), 5)
    return [
        f"spawn+stop {spawn:.1f} ms, freeze+thaw {frozen:.2f} ms,",
        f"probe of {len(flows)} flows: program {program_probe:.1f} ms, own socket",
        f"{own_probe:.1f} ms (ratio {own_probe / program_probe:.2f})",
    ]


if __name__ == "__main__":
    main()
