"""Probe throughput: bindlab's probe() vs raw TUN write/read of pre-built bytes.

Both sides do the same kernel work per flow (SYN in, SYN-ACK out, ACK in, accept(), close
with RST, the RST read back); the raw side does it with packets built before the clock
starts and no classification, and checks that every flow was accepted (a handshake that
failed would do less work and flatter the baseline). The rounds interleave the two, so the
ratio compares them under the same load. probe() gets pre-parsed Flow objects; the rate
with flow strings (parsed inside probe()) is printed for information.
Run: ``python bench/bench_probe.py [--flows N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import struct
import time

from bindlab import Flow, Namespace, packets

LINGER_RST = struct.pack("ii", 1, 0)


def flows_for(round_: int, n: int, proto: str = "tcp") -> list[Flow]:
    return [
        Flow.parse(
            f"{proto} 198.18.{i // 250}.{i % 250 + 1}:{1024 + round_ * 7 + i % 50000} -> 192.0.2.10:80"
        )
        for i in range(n)
    ]


def raw_round(ns: Namespace, lst: socket.socket, flows: list[Flow]) -> float:
    """Pre-built SYNs and ACKs; the ACK's ack number comes from the SYN-ACK read back."""
    fd = ns.injector._fd()
    syns = [
        packets.tcp(f.src.packed, f.dst.packed, f.sport, f.dport, packets.TCP_SYN, seq=1)
        for f in flows
    ]
    acks = [
        bytearray(packets.tcp(f.src.packed, f.dst.packed, f.sport, f.dport, packets.TCP_ACK, seq=2))
        for f in flows
    ]
    lst.setblocking(False)
    accepted = 0
    t = time.perf_counter()
    for i in range(0, len(flows), 256):
        for s in syns[i : i + 256]:
            os.write(fd, s)
        replies = []
        while True:
            try:
                replies.append(os.read(fd, 2048))
            except BlockingIOError:
                break
        for j, r in enumerate(replies):
            # patch the ack number in and recompute the checksum, as a real client would
            a = acks[i + j]
            ack = (int.from_bytes(r[24:28], "big") + 1) & 0xFFFFFFFF
            a[28:32] = ack.to_bytes(4, "big")
            a[36:38] = b"\0\0"
            c = packets._csum(
                bytes(a[12:20]) + struct.pack("!BBH", 0, 6, len(a) - 20) + bytes(a[20:])
            )
            a[36:38] = c.to_bytes(2, "big")
            os.write(fd, a)
        while True:
            try:
                c, _ = lst.accept()
            except BlockingIOError:
                break
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            c.close()
            accepted += 1
        select.select([], [], [], 0)
        while True:
            try:
                os.read(fd, 2048)
            except BlockingIOError:
                break
    rate = len(flows) / (time.perf_counter() - t)
    if accepted != len(flows):
        raise SystemExit(f"raw loop accepted {accepted} of {len(flows)} flows")
    return rate


def probe_round(ns: Namespace, flows: list[Flow] | list[str]) -> float:
    t = time.perf_counter()
    got = ns.distribution(flows)
    rate = len(flows) / (time.perf_counter() - t)
    if got != {"web": len(flows)}:
        raise SystemExit(f"probe misclassified: {got}")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    with Namespace() as ns:
        ns.add_local_route("192.0.2.0/24")
        lst = ns.tcp_listener("192.0.2.10:80", label="web")
        ns.injector  # noqa: B018
        ours, ours_str, raw = [], [], []
        for r in range(args.rounds):
            ours.append(probe_round(ns, flows_for(r, args.flows)))
            ours_str.append(probe_round(ns, [str(f) for f in flows_for(r + 500, args.flows)]))
            raw.append(raw_round(ns, lst, flows_for(r + 1000, args.flows)))
    mo, ms, mr = statistics.median(ours), statistics.median(ours_str), statistics.median(raw)
    print(f"# probe throughput, {args.flows} TCP flows x {args.rounds} rounds, medians")
    print(f"bindlab probe():     {mo:9.0f} flows/s classified (Flow objects)")
    print(f"  from flow strings: {ms:9.0f} flows/s (parsed inside probe(); information)")
    print(f"raw TUN pre-built:   {mr:9.0f} flows/s (same handshake+accept+close)")
    per_round = statistics.median(o / r for o, r in zip(ours, raw, strict=True))
    print(f"ratio probe/raw:     {mo / mr:9.2f} (median of per-round ratios: {per_round:.2f})")


if __name__ == "__main__":
    main()
