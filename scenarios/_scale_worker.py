"""A worker process of the IP_BIND_ADDRESS_NO_PORT scale experiment (stdlib only).

RLIMIT_NOFILE caps one process at 20000 sockets, so the experiment spreads its client
sockets over many of these workers. A worker joins the namespace named by a path, opens up
to ``quota`` connections from one source IP (cycling over the destinations), prints one
JSON line saying how far it got and why it stopped, then holds its sockets until its stdin
closes or it is killed. It dies with its parent (PR_SET_PDEATHSIG).

Protocol: every ``PROGRESS`` connections it prints ``{"progress": N}``; a ``stop`` line on
its stdin ends the filling early; the last line is the result (see :func:`fill`).

Usage: ``python _scale_worker.py '{"ns": PATH, "mode": "noport"|"plain", "src": IP,
"dsts": [[IP, PORT], ...], "quota": N}'``
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time

CLONE_NEWNET = 0x40000000  # <linux/sched.h>
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
IP_BIND_ADDRESS_NO_PORT = 24  # <linux/in.h>
LINGER_RST = struct.pack("ii", 1, 0)  # close() sends RST: no FIN_WAIT/TIME_WAIT at teardown
PROGRESS = 2048


def join(path: str) -> None:
    """Die with the parent, lift the soft fd limit to the hard one, enter the namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl took effect
        sys.exit(1)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({path}): {os.strerror(err)}")
    os.close(fd)


def fill(mode: str, src: str, dsts: list[tuple[str, int]], quota: int) -> dict[str, object]:
    """Open up to ``quota`` connections; return the count and why it stopped.

    ``noport``: IP_BIND_ADDRESS_NO_PORT, bind(src, 0), connect(); a destination whose
    every 4-tuple is taken (EADDRNOTAVAIL) is dropped, and the worker stops when none is left.
    ``plain``: bind(src, 0) then connect(); the first failing bind() stops the worker.
    """
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    held: list[socket.socket] = []
    live = list(dsts)
    stop, failed_call, i = "quota", "", 0
    t0 = time.monotonic()
    while len(held) < quota:
        if not live:
            stop = "EADDRNOTAVAIL on every destination"
            break
        dst = live[i % len(live)]
        i += 1
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            stop, failed_call = errno.errorcode.get(e.errno or 0, str(e.errno)), "socket"
            break
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        if mode == "noport":
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        call = "bind"
        try:
            s.bind((src, 0))
            call = "connect"
            s.connect(dst)
        except OSError as e:
            s.close()
            if mode == "noport" and call == "connect" and e.errno == errno.EADDRNOTAVAIL:
                live.remove(dst)
                continue
            stop, failed_call = errno.errorcode.get(e.errno or 0, str(e.errno)), call
            break
        held.append(s)
        if len(held) % PROGRESS == 0:
            print(json.dumps({"progress": len(held)}), flush=True)
            if select.select([sys.stdin], [], [], 0)[0]:
                stop = "stopped by the parent"
                break
    elapsed = time.monotonic() - t0
    with open("/proc/self/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return {
        "count": len(held),
        "stop": stop,
        "call": failed_call,
        "elapsed": elapsed,
        "rss_kb": rss_kb,
        "ports": port_bitmap(held),
        "exhausted": [list(d) for d in dsts if d not in live],
        "_held": held,  # keeps the sockets referenced; not printed
    }


def port_bitmap(held: list[socket.socket]) -> str:
    """The local ports of ``held`` as a 65536-bit integer in hex (the parent ORs them)."""
    bits = bytearray(8192)
    for s in held:
        port = s.getsockname()[1]
        bits[port >> 3] |= 1 << (port & 7)
    return int.from_bytes(bits, "little").__format__("x")


def main() -> None:
    spec = json.loads(sys.argv[1])
    join(spec["ns"])
    result = fill(spec["mode"], spec["src"], [tuple(d) for d in spec["dsts"]], spec["quota"])
    held = result.pop("_held")
    print(json.dumps(result), flush=True)
    sys.stdin.read()  # hold the connections until the parent closes our stdin
    del held


if __name__ == "__main__":
    main()
