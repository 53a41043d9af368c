"""Real programs as subjects: start one inside a namespace and label the sockets it binds.

:func:`spawn` starts the program with :class:`bindlab.process.Process` (the namespace's
network and its own /sys, in a group bindlab owns), then polls the namespace's sockets
through sock_diag until the program's are bound: a socket is the program's when one of its
processes holds a descriptor of that inode (``/proc/PID/fd``). Each TCP listener and UDP
socket is then duplicated into this process with ``pidfd_getfd`` (no cooperation from the
program) and labelled like the test's own sockets, so :func:`bindlab.probe.probe` names it
in verdicts. While a probe runs, :func:`frozen` freezes every program of the namespace, so
the probe, not the program, accepts each connection and reads each datagram; the kernel's
choice of socket is the same either way.

Labels are ``PROGRAM:ADDR:PORT`` (``nginx:192.0.2.10:80``, ``nginx:[::]:80``); where the
program holds a TCP and a UDP socket on one address each ends in its protocol
(``dnsmasq:192.0.2.1:53/udp``); when several sockets share protocol and address (a
SO_REUSEPORT group, one per worker) they are ``#1``..``#n`` in the order of their
descriptors in the first process holding them (nginx: the master opens worker *k*'s socket
*k*-th). ``labels={"nginx:0.0.0.0:80#1": "w1"}`` renames. A label names one socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bindlab.errors import ConfigError, HarnessError
from bindlab.netns import NetNS, StashKey
from bindlab.process import Group, Process
from bindlab.sockets import check_label, label_socket, parse_addr

SYS_PIDFD_OPEN = 434  # <asm/unistd_64.h>, x86_64 (and every arch using the generic table)
SYS_PIDFD_GETFD = 438
TCP_LISTEN_MASK = 1 << 10  # TCP_LISTEN in sock_diag's state bitmask
ALL_STATES = 0xFFF
POLL = 0.01  # s between sock_diag polls while waiting

_PROGRAMS: StashKey[list[Program]] = StashKey("programs")
_libc = ctypes.CDLL(None, use_errno=True)


class ProgramError(HarnessError):
    """A program that failed to start or to bind; the message quotes what it printed."""


@dataclass(frozen=True)
class ProgramSocket:
    """One socket a program holds: its label, protocol and bound address. Who holds it and
    who polls it (serves it) are read from /proc when asked: workers come and go."""

    label: str
    program: str
    proto: str
    addr: str  # IP:PORT, [IPv6]:PORT
    inode: int
    process: Process = field(compare=False, repr=False)

    @property
    def holders(self) -> tuple[tuple[int, str], ...]:
        """``(pid, role)`` of the processes holding it: "main" (the spawned pid) or "child"."""
        main = self.process.pid
        pids = sorted({p for p, _ in _held(self.process.pids()).get(self.inode, ())},
                      key=lambda p: (p != main, p))  # fmt: skip
        return tuple((p, "main" if p == main else "child") for p in pids)

    @property
    def pollers(self) -> tuple[int, ...]:
        """The pids whose epoll set watches it: who accepts or reads from it."""
        return tuple(sorted(set(_polled(self.process.pids()).get(self.inode, ()))))

    def describe(self) -> str:
        """``program nginx, tcp 0.0.0.0:80, held by pid 12 (main), 14 (child), polled by 14``."""
        held = ", ".join(f"{pid} ({role})" for pid, role in self.holders) or "none (exited)"
        pollers = self.pollers
        polled = f", polled by {', '.join(map(str, pollers))}" if pollers else ""
        return f"program {self.program}, {self.proto} {self.addr}, held by pid {held}{polled}"


def endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _bound(ns: NetNS) -> dict[int, tuple[str, str]]:
    """``{inode: (proto, addr)}`` of the namespace's TCP listeners and bound UDP sockets."""
    from pyroute2 import DiagSocket

    out: dict[int, tuple[str, str]] = {}
    with ns.enter(), DiagSocket() as ds:
        ds.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for proto, ipproto, states in (
                ("tcp", socket.IPPROTO_TCP, TCP_LISTEN_MASK),
                ("udp", socket.IPPROTO_UDP, ALL_STATES),
            ):
                for m in ds.get_sock_stats(family=family, protocol=ipproto, states=states):
                    if m["idiag_sport"] and m["idiag_inode"]:
                        out[m["idiag_inode"]] = (proto, endpoint(m["idiag_src"], m["idiag_sport"]))
    return out


def _held(pids: Sequence[int]) -> dict[int, list[tuple[int, int]]]:
    """``{socket inode: [(pid, fd), ...]}`` over the descriptors of ``pids``."""
    out: dict[int, list[tuple[int, int]]] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in sorted(fds, key=int):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                out.setdefault(int(target[8:-1]), []).append((pid, int(fd)))
    return out


def _polled(pids: Sequence[int]) -> dict[int, list[int]]:
    """``{socket inode: [pid, ...]}``: which processes watch it in an epoll set (``tfd:``
    lines of ``/proc/PID/fdinfo`` of their epoll descriptors)."""
    out: dict[int, list[int]] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[eventpoll]":
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    watched = [int(ln.split()[1]) for ln in f if ln.startswith("tfd:")]
            except (OSError, ValueError, IndexError):
                continue
            for tfd in watched:
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{tfd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    out.setdefault(int(target[8:-1]), []).append(pid)
    return out


def _pidfd_getfd(pid: int, fd: int) -> int:
    """A duplicate, in this process, of descriptor ``fd`` of process ``pid``."""
    pidfd = _libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pidfd_open({pid}): {os.strerror(err)}")
    try:
        dup = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if dup < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd({pid}, {fd}): {os.strerror(err)}")
        return int(dup)
    finally:
        os.close(pidfd)


def wanted(wait_for: Sequence[str]) -> list[tuple[str, str]]:
    """``["tcp 192.0.2.10:80", ...]`` -> ``[("tcp", "192.0.2.10:80")]``, checked."""
    out = []
    for w in wait_for:
        proto, _, addr = w.strip().partition(" ")
        if proto not in ("tcp", "udp"):
            raise ConfigError(f"wait_for {w!r}: expected 'tcp IP:PORT' or 'udp IP:PORT'")
        _, (ip, port) = parse_addr(addr.strip())
        out.append((proto, endpoint(ip, port)))
    return out


class Program:
    """A program running inside a namespace, and the labelled sockets it holds."""

    def __init__(self, label: str, process: Process, ns: NetNS) -> None:
        self.ns = ns
        self.label = label
        self.process = process
        self.sockets: list[ProgramSocket] = []
        self.dups: dict[int, socket.socket] = {}  # inode -> this process's duplicate
        self.rename: dict[str, str] = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def workdir(self) -> str:
        """The program's directory (its output log; configs the caller writes there)."""
        return self.process.workdir

    def output(self) -> str:
        """What the program printed (stdout and stderr) so far."""
        return self.process.output()

    def pids(self) -> list[int]:
        return self.process.pids()

    def rescan(self, **kw: Any) -> Program:
        """Label the sockets it bound since, forget those it closed: :func:`rescan`."""
        return rescan(self.ns, self, **kw)

    def stop(self) -> None:
        """Kill the program and every process it started, close the duplicates (idempotent)."""
        for sock in self.dups.values():
            sock.close()
        self.process.stop()

    def __repr__(self) -> str:
        return f"<Program {self.label} pid={self.pid} sockets={len(self.sockets)}>"


def programs(ns: NetNS) -> list[Program]:
    """The programs spawned in ``ns`` (stopped when ``ns`` closes)."""
    return ns.stash.setdefault(_PROGRAMS, list)


def program_socket(ns: NetNS, label: str) -> ProgramSocket | None:
    """The program socket labelled ``label`` in ``ns``, if a program holds it."""
    for prog in programs(ns):
        for s in prog.sockets:
            if s.label == label:
                return s
    return None


@contextlib.contextmanager
def frozen(ns: NetNS) -> Iterator[None]:
    """Freeze every running program of ``ns`` for the ``with`` body (nothing if none)."""
    with contextlib.ExitStack() as stack:
        for prog in programs(ns):
            if not prog.process.stopped:
                stack.enter_context(prog.process.frozen())
        yield


def _tail(text: str, lines: int = 20) -> str:
    shown = text.rstrip().splitlines()[-lines:]
    return "\n".join(f"  | {ln}" for ln in shown) if shown else "  (it printed nothing)"


def spawn(
    ns: NetNS,
    argv: Sequence[str],
    label: str,
    *,
    wait_for: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    settle: float = 0.2,
    env: dict[str, str] | None = None,
    workdir: str | None = None,
    files: Mapping[str, str] | None = None,
    group: Group | None = None,
) -> Program:
    """Start ``argv`` inside ``ns``, wait until its sockets are bound, label them.

    It waits until the program holds at least one TCP listener or UDP socket (with
    ``wait_for=["tcp 192.0.2.10:80", ...]``: each of those) and that set, and which of its
    processes hold them, has not changed for ``settle`` s (workers forked). A program that
    exits first, or a ``timeout``, raises :class:`ProgramError` quoting its output.

    ``files`` (name -> text) are written to the program's workdir first; ``{dir}`` in
    ``argv`` and in the files stands for that directory (:class:`bindlab.process.Process`).
    ``labels`` renames derived labels (``{"nginx:0.0.0.0:80#1": "w1"}``). ``group``: where
    its processes live (default: a cgroup if possible, else a session; see
    :mod:`bindlab.process`).
    """
    check_label(label)
    if not argv:
        raise ConfigError(f"program {label!r}: empty argv")
    want = wanted(wait_for)
    process = Process(
        argv, ns.path, pass_fds=(ns.fd,), env=env, workdir=workdir, files=files, group=group
    )
    prog = Program(label, process, ns)
    prog.rename = dict(labels or {})
    programs(ns).append(prog)
    ns.defer(prog.stop)
    try:
        found = _wait_bound(ns, prog, want, timeout, settle)
        prog.sockets = _adopt(ns, prog, found, dict(prog.rename))
    except BaseException:
        prog.stop()
        raise
    return prog


def rescan(
    ns: NetNS,
    prog: Program,
    *,
    wait_for: Sequence[str] = (),
    timeout: float = 10.0,
    settle: float = 0.2,
) -> Program:
    """Follow a program whose sockets changed since :func:`spawn` (a daemon binding the
    addresses that appear, as dnsmasq's ``bind-dynamic`` does): wait as :func:`spawn` does,
    label the new sockets, and drop (and close this process's duplicate of) those it closed,
    so they count in no verdict."""
    want = wanted(wait_for)
    found = _wait_bound(ns, prog, want, timeout, settle)
    for inode in [i for i in prog.dups if i not in found]:
        prog.dups.pop(inode).close()
    prog.sockets = [s for s in prog.sockets if s.inode in found]
    new = _adopt(ns, prog, found, dict(prog.rename), skip={s.inode for s in prog.sockets})
    prog.sockets += new
    return prog


Found = dict[int, tuple[str, str, list[tuple[int, int]]]]  # inode -> (proto, addr, holders)


def _wait_bound(
    ns: NetNS, prog: Program, wanted: list[tuple[str, str]], timeout: float, settle: float
) -> Found:
    deadline = time.monotonic() + timeout
    last: Found | None = None
    stable_since = time.monotonic()
    while True:
        pids = prog.pids()
        bound = _bound(ns)
        held = _held(pids)
        found = {i: (*bound[i], held[i]) for i in held if i in bound}
        have = {(p, a) for p, a, _ in found.values()}
        ready = all(w in have for w in wanted) if wanted else bool(found)
        if ready and found == last and time.monotonic() - stable_since >= settle:
            return found  # and no process has come or gone with them for settle s
        if found != last:
            last, stable_since = found, time.monotonic()
        cmd = shlex.join(prog.process.argv)
        name = f"program {prog.label!r} ({cmd if len(cmd) < 100 else cmd[:96] + ' ...'})"
        code = prog.process.popen.poll()
        if not pids and code is not None:  # (not yet joined its group: poll() is None)
            raise ProgramError(
                f"{name} exited (status {code}) before binding "
                f"{', '.join(f'{p} {a}' for p, a in wanted) or 'any socket'}; it printed:\n"
                + _tail(prog.output())
            )
        if time.monotonic() > deadline:
            waited = ", ".join(f"{p} {a}" for p, a in wanted) or "a stable set of bound sockets"
            has = ", ".join(sorted(f"{p} {a}" for p, a in have)) or "nothing"
            raise ProgramError(
                f"{name}: not bound after {timeout} s: waited for {waited}, it holds {has}; "
                f"it printed:\n" + _tail(prog.output())
            )
        time.sleep(POLL)


def _adopt(
    ns: NetNS, prog: Program, found: Found, rename: dict[str, str], skip: set[int] | None = None
) -> list[ProgramSocket]:
    """Duplicate and label every socket in ``found`` (but those in ``skip``, adopted
    already); return their records. A ``rename`` key that names no socket is an error."""
    main = prog.pid
    groups: dict[tuple[str, str], list[tuple[tuple[int, int, int], int]]] = {}
    for inode, (proto, addr, holders) in found.items():
        # order: holders main first, then by pid; within the first holder, by fd
        ranked = sorted((0 if pid == main else 1, pid, fd) for pid, fd in holders)
        groups.setdefault((proto, addr), []).append((ranked[0], inode))
    out: list[ProgramSocket] = []
    derived: list[str] = []
    both = {a for p, a in groups if p == "tcp"} & {a for p, a in groups if p == "udp"}
    for (proto, addr), members in sorted(groups.items()):
        members.sort()
        for k, ((_, pid, fd), inode) in enumerate(members, 1):
            name = f"{prog.label}:{addr}" + (f"/{proto}" if addr in both else "")
            name += f"#{k}" if len(members) > 1 else ""
            derived.append(name)
            label = check_label(rename.pop(name, name))
            if skip and inode in skip:
                continue
            sock = socket.socket(fileno=_pidfd_getfd(pid, fd))
            # One open file with the program's: O_NONBLOCK is shared. Python assumes a
            # blocking fd and a probe restores "its" timeout: make that the program's mode.
            sock.settimeout(None if os.get_blocking(sock.fileno()) else 0.0)
            prog.dups[inode] = sock
            label_socket(ns, sock, label)
            out.append(ProgramSocket(label, prog.label, proto, addr, inode, prog.process))
    if rename and skip is None:
        raise ConfigError(
            f"program {prog.label!r}: labels for sockets it does not hold: "
            f"{', '.join(sorted(rename))}; it holds {', '.join(derived)}"
        )
    return out
