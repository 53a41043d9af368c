"""Namespace lifecycle: create + configure (lo up, one local route) + destroy.

Three ways side by side in one run, medians: this harness (in-process unshare held by an
fd, netlink through pyroute2), ``ip netns add`` + ``ip`` subprocesses, and bare
unshare+close (the floor). Run: ``python bench/bench_netns.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections.abc import Callable

from bindlab import Namespace
from bindlab.netns import _new_netns_fd


def harness_cycle(i: int) -> None:
    ns = Namespace()  # lo up included
    ns.add_local_route("192.0.2.0/24")
    ns.close()


def ip_cycle(i: int) -> None:
    name = f"bl-bench-{os.getpid()}-{i}"
    for argv in (
        ["ip", "netns", "add", name],
        ["ip", "-n", name, "link", "set", "lo", "up"],
        ["ip", "-n", name, "route", "add", "local", "192.0.2.0/24", "dev", "lo"],
        ["ip", "netns", "del", name],
    ):
        subprocess.run(argv, check=True)


def bare_cycle(i: int) -> None:
    os.close(_new_netns_fd())


def measure(fn: Callable[[int], None], rounds: int) -> float:
    times = []
    for i in range(rounds):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    for fn in (harness_cycle, ip_cycle, bare_cycle):  # warm up imports and caches
        fn(-1)
    # interleave the three so that machine noise hits them alike
    results: dict[str, list[float]] = {"harness": [], "ip": [], "bare": []}
    for _ in range(5):
        results["harness"].append(measure(harness_cycle, args.rounds // 5))
        results["ip"].append(measure(ip_cycle, max(1, args.rounds // 25)))
        results["bare"].append(measure(bare_cycle, args.rounds // 5))
    h, ip, bare = (statistics.median(results[k]) for k in ("harness", "ip", "bare"))
    print(f"# namespace create+configure+destroy, medians ({args.rounds} rounds)")
    print(f"bindlab Namespace:        {h:7.2f} ms")
    print(f"ip netns add + ip x3:     {ip:7.2f} ms   (bindlab is {ip / h:.1f}x faster)")
    print(f"bare unshare+close:       {bare:7.2f} ms   (bindlab / bare = {h / bare:.1f}x)")


if __name__ == "__main__":
    main()
