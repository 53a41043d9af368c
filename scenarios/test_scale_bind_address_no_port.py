"""IP_BIND_ADDRESS_NO_PORT at scale: concurrent connections from one source IP.

Claim (Linux 4.2, "inet: add IP_BIND_ADDRESS_NO_PORT to overcome bind(0) limitations"):
bind(IP, 0) caps a source IP at the ~32k ephemeral ports; with the option the port is
chosen at connect() and shared while 4-tuples are unique, so one IP reaches ~1M connections.

Check: per phase a fresh namespace with the default ephemeral range and D listeners (one
per destination address; accept queues are never drained, so the server side holds no fds).
Worker processes (``_scale_worker.py``; RLIMIT_NOFILE caps each at 20000 fds) open
connections from one source IP. Plain bind(IP, 0)+connect() must stop at exactly the number
of ephemeral ports (bind: EADDRINUSE). With the option the phase runs to the connection
target (or to D x ports, every 4-tuple used, then connect: EADDRNOTAVAIL) over no more
distinct source ports than the range has. Counts, rate, time and memory are printed; no
assertion is about time.

Destinations default to 128 so that each takes only ~28% of its 4-tuples: connect() scans
ports of one parity first, so once a destination has used half of them every further
connect() walks ~14k busy ports (measured: 10-25x slower per connect; a per-socket
IP_LOCAL_PORT_RANGE switches the scan to step 1 and avoids it).

Knobs: BINDLAB_SCALE_CONNECTIONS (target, default 1,000,000; 0 = until the kernel or a
budget stops), BINDLAB_SCALE_DESTS (default 128), BINDLAB_SCALE_SECONDS (deadline per phase,
default 170), BINDLAB_SCALE_MEM_FLOOR_GIB (stop when MemAvailable falls below, default 4),
BINDLAB_SCALE_RANGE (e.g. "40000 44999" for a quick run; default the namespace's own).

Run: ``.venv/bin/pytest -m scale -s scenarios/test_scale_bind_address_no_port.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from bindlab import Namespace
from bindlab.progress import Progress

pytestmark = [pytest.mark.scale, pytest.mark.requires("IP_BIND_ADDRESS_NO_PORT")]

WORKER = os.path.join(os.path.dirname(__file__), "_scale_worker.py")
SRC = "192.0.2.200"
CONNECTIONS = int(os.environ.get("BINDLAB_SCALE_CONNECTIONS", "1000000"))
DESTS = int(os.environ.get("BINDLAB_SCALE_DESTS", "128"))
PHASE_SECONDS = float(os.environ.get("BINDLAB_SCALE_SECONDS", "170"))
MEM_FLOOR = int(float(os.environ.get("BINDLAB_SCALE_MEM_FLOOR_GIB", "4")) * 2**30)
PORT_RANGE = os.environ.get("BINDLAB_SCALE_RANGE")
PARALLEL = 2  # workers filling at once (2 cores; more does not go faster)
GRACE = 30.0  # seconds a worker asked to stop may take before it is killed
TARGET = 900_000  # the target with the option: a count, never a time
QUOTA = resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 64  # sockets per worker
INT_MAX = 2**31 - 1
EVERY_DEST = "EADDRNOTAVAIL on every destination"  # the worker's words


def meminfo() -> dict[str, int]:
    """/proc/meminfo, in bytes."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":")
            out[key] = int(value.split()[0]) * 1024
    return out


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    buf: bytes = b""
    count: int = 0
    result: dict[str, Any] | None = None


@dataclass
class Phase:
    """How far one phase got, why it stopped, and what it cost."""

    mode: str
    count: int = 0
    ports: int = 0  # distinct source ports over all connections
    stops: Counter[str] = field(default_factory=Counter)
    workers: int = 0
    seconds: float = 0.0
    budget: str | None = None  # what ended the phase if not the kernel
    teardown: float = 0.0  # seconds to kill the workers (their sockets close with RST)
    mem_used: int = 0  # drop of MemAvailable
    slab_used: int = 0
    worker_rss: int = 0
    exhausted: set[tuple[str, int]] = field(default_factory=set)
    sockstat: str = ""

    def lines(self) -> list[str]:
        rate = self.count / self.seconds if self.seconds else 0.0
        per = self.mem_used / self.count if self.count else 0
        return [
            f"{self.mode}: {self.count:,} concurrent connections from {SRC} over "
            f"{self.ports:,} source ports, in {self.seconds:.1f} s ({rate:,.0f}/s), "
            f"{self.workers} workers",
            f"{self.mode}: stopped by {dict(self.stops)}"
            + (f"; budget: {self.budget}" if self.budget else ""),
            f"{self.mode}: memory {self.mem_used / 2**30:.2f} GiB (MemAvailable drop, "
            f"{per:,.0f} B/connection), slab +{self.slab_used / 2**30:.2f} GiB, "
            f"worker RSS {self.worker_rss / 2**30:.2f} GiB",
            f"{self.mode}: /proc/net/sockstat TCP {self.sockstat}; "
            f"workers killed in {self.teardown:.1f} s",
        ]


class Fleet:
    """Worker processes holding client sockets in one namespace; all killed on close."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.workers: list[Worker] = []

    def spawn(self, spec: dict[str, Any]) -> Worker:
        spec = {"ns": self.ns.path, **spec}
        proc = subprocess.Popen(
            [sys.executable, WORKER, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        w = Worker(proc)
        self.workers.append(w)
        return w

    def rss(self) -> int:
        total = 0
        for w in self.workers:
            with contextlib.suppress(OSError), open(f"/proc/{w.proc.pid}/status") as f:
                total += next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) * 1024
        return total

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGKILL)
        for w in self.workers:
            w.proc.wait()
            for pipe in (w.proc.stdin, w.proc.stdout):
                with contextlib.suppress(OSError):
                    pipe.close()  # type: ignore[union-attr]
        self.workers.clear()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def setup_ns(ns: Namespace, dests: int) -> tuple[list[tuple[str, int]], int]:
    """``dests`` listeners with unbounded accept queues; returns them and the port count."""
    ns.add_local_route("192.0.2.0/24")
    ns.sysctl("net.core.somaxconn", INT_MAX)
    if PORT_RANGE:
        ns.sysctl("net.ipv4.ip_local_port_range", PORT_RANGE)
    dsts = []
    for i in range(1, dests + 1):
        s = ns.socket("tcp", 4)
        s.bind((f"192.0.2.{i}", 80))
        s.listen(INT_MAX)
        dsts.append((f"192.0.2.{i}", 80))
    lo, hi = map(int, ns.sysctl("net.ipv4.ip_local_port_range").split())
    return dsts, hi - lo + 1


def run_phase(ns: Namespace, mode: str, dsts: list[tuple[str, int]], target: int) -> Phase:
    """Spawn workers (PARALLEL at a time) until the kernel refuses, ``target`` connections
    are open (0: no target) or a budget (deadline, memory floor) runs out."""
    phase = Phase(mode)
    before = meminfo()
    sel = selectors.DefaultSelector()
    t0 = time.monotonic()
    deadline = t0 + PHASE_SECONDS
    assigned, spawning, ports = 0, True, 0
    # connections open, their rate and the memory they take, every few seconds (CI: lines)
    progress = Progress(f"scale {mode}", total=target or None, unit="connections")
    with Fleet(ns) as fleet, contextlib.closing(progress):
        filling: list[Worker] = []

        def stop_spawning(budget: str | None) -> None:
            """Spawn no more; on a budget, also ask the filling workers to stop."""
            nonlocal spawning
            spawning = False
            if budget is not None:
                phase.budget = budget
                for w in filling:
                    with contextlib.suppress(BrokenPipeError):
                        w.proc.stdin.write(b"stop\n")  # type: ignore[union-attr]
                        w.proc.stdin.flush()  # type: ignore[union-attr]

        while True:
            while spawning and len(filling) < PARALLEL:
                quota = QUOTA if not target else min(QUOTA, target - assigned)
                if quota <= 0:
                    stop_spawning(None)
                    break
                assigned += quota
                w = fleet.spawn({"mode": mode, "src": SRC, "dsts": dsts, "quota": quota})
                filling.append(w)
                sel.register(w.proc.stdout, selectors.EVENT_READ, w)  # type: ignore[arg-type]
            if not filling:
                break
            for key, _ in sel.select(timeout=0.5):
                w = key.data
                chunk = os.read(key.fd, 1 << 16)
                *lines, w.buf = (w.buf + chunk).split(b"\n")
                for line in lines:
                    msg = json.loads(line)
                    w.count = msg.get("progress", msg.get("count", w.count))
                    if "count" in msg:
                        w.result = msg
                if w.result is None and chunk:
                    continue
                sel.unregister(key.fileobj)  # done filling: it keeps its sockets
                filling.remove(w)
                if w.result is None:  # died: its sockets died with it
                    w.count = 0
                stop = w.result["stop"] if w.result else f"worker died ({w.proc.wait()})"
                phase.stops[stop] += 1
                if w.result:
                    phase.exhausted |= {tuple(d) for d in w.result["exhausted"]}
                    ports |= int(w.result["ports"], 16)
                if stop != "quota":
                    stop_spawning(None)  # the kernel refused: every other worker hits it too
            now = meminfo()
            used = (before["MemAvailable"] - now["MemAvailable"]) / 2**30
            progress.update(sum(w.count for w in fleet.workers), f"{used:.2f} GiB used")
            if spawning and time.monotonic() > deadline:
                stop_spawning("deadline")
            if spawning and now["MemAvailable"] < MEM_FLOOR:
                stop_spawning("memory floor")
            if filling and time.monotonic() > deadline + GRACE:  # stuck (e.g. in connect())
                for w in filling:
                    w.proc.kill()
                    w.count = 0
                    sel.unregister(w.proc.stdout)  # type: ignore[arg-type]
                    phase.stops["killed after the deadline"] += 1
                filling.clear()
        phase.seconds = time.monotonic() - t0
        peak = meminfo()
        phase.count = sum(w.count for w in fleet.workers)
        phase.ports = ports.bit_count()
        phase.workers = len(fleet.workers)
        phase.mem_used = before["MemAvailable"] - peak["MemAvailable"]
        phase.slab_used = peak["Slab"] - before["Slab"]
        phase.worker_rss = fleet.rss()
        stat = ns.run(["cat", "/proc/net/sockstat"]).stdout.splitlines()[1]
        phase.sockstat = " ".join(stat.split()[1:])
        t1 = time.monotonic()
        fleet.close()
        phase.teardown = time.monotonic() - t1
    sel.close()
    return phase


def test_one_source_ip_shares_ports_per_4tuple(
    netns_factory: Callable[..., Namespace], capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = time.monotonic()
    ns = netns_factory()
    dsts, ports = setup_ns(ns, 1)
    plain = run_phase(ns, "plain", dsts, 0)
    ns.close()  # free those connections before the next phase
    ns = netns_factory()
    dsts, ports = setup_ns(ns, DESTS)
    noport = run_phase(ns, "noport", dsts, CONNECTIONS)
    t_close = time.monotonic()
    ns.close()
    with capsys.disabled():
        print(f"\n# ephemeral ports {ports:,}; destinations {DESTS}; {QUOTA:,} sockets/worker")
        for line in plain.lines() + noport.lines():
            print(f"# {line}")
        print(f"# teardown of the second namespace {time.monotonic() - t_close:.1f} s")
        print(f"# whole experiment {time.monotonic() - t0:.1f} s")

    # Without the option every bind(IP, 0) takes a port of its own, until none is left.
    assert set(plain.stops) <= {"quota", "EADDRINUSE"} and plain.stops["EADDRINUSE"], plain
    assert plain.count == plain.ports == ports, (plain.count, plain.ports, ports)
    # With it, connect() shares each port among destinations.
    assert noport.ports <= ports
    if noport.budget is None and EVERY_DEST in noport.stops:
        assert len(noport.exhausted) == DESTS
        assert noport.count == DESTS * ports, (noport.count, DESTS, ports)
    elif noport.budget is None:
        assert set(noport.stops) == {"quota"}, noport.stops
        assert noport.count == CONNECTIONS
    assert noport.count >= min(TARGET, CONNECTIONS or TARGET, DESTS * ports), (
        f"IP_BIND_ADDRESS_NO_PORT reached {noport.count:,} connections "
        f"(stopped by {noport.budget or dict(noport.stops)}); target {TARGET:,}"
    )
