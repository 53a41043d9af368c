"""Processes run inside a namespace: isolated, grouped, frozen on demand, stopped for sure.

A program started here sees the namespace's network and its own ``/sys`` (a private mount
namespace with a fresh sysfs, so ``/sys/class/net`` lists the namespace's links and nothing
of the host's), started by the same command line as :meth:`bindlab.netns.NetNS.run`
(:func:`bindlab.netns.isolated`).

Every process it starts, and everything that process forks (daemons and workers included),
lives in one group that bindlab owns:

- a cgroup v2 directory ``<cgroup2>/bindlab/bl-<pid>-<starttime>-<rand>`` when the cgroup2
  mount is writable: the child moves itself there before it execs, ``cgroup.freeze`` freezes
  the whole tree and ``cgroup.kill`` ends it;
- otherwise a session (``setsid``): the tree is the session's members, frozen with
  SIGSTOP/SIGCONT and ended with SIGKILL, recorded in ``/run/bindlab/bl-...`` (a program
  that calls ``setsid`` itself escapes it: run it in the foreground).

Both names tell :func:`reap` who owns them, as namespaces' names do: when the run that made
them is gone (even SIGKILLed), the next run (or ``bindlab reap``) kills what is left.

Example::

    with Process(["socat", "-u", "UDP-RECV:53", "-"], ns.path, pass_fds=(ns.fd,)) as p:
        with p.frozen():
            ...  # nothing in p's tree runs here
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from bindlab.errors import HarnessError
from bindlab.netns import isolated
from bindlab.reaper import NAME_PREFIX, make_name, owner_alive

# session records of the fallback (no writable cgroup2), and the cgroup directory under the
# cgroup2 mount; the environment moves them (a test's own run reaps only its own leftovers)
RECORDS = os.environ.get("BINDLAB_PROCS_DIR", "/run/bindlab")
CGROUP_SUBDIR = os.environ.get("BINDLAB_CGROUP_DIR", "bindlab")
STOP_TIMEOUT = 5.0

# The child joins its group, then execs the isolated command line (bindlab.netns.isolated:
# nsenter, unshare --mount, the namespace's own sysfs on /sys); one pid all along.
_JOIN = 'g=$1; shift; [ -z "$g" ] || echo $$ > "$g" || exit 125; exec "$@"'


def cgroup2_root() -> str | None:
    """The cgroup2 mount point if this process may create cgroups under it, else None."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                if post.split(" ", 1)[0] == "cgroup2":
                    mnt = pre.split()[4]
                    if os.access(mnt, os.W_OK) and os.path.exists(f"{mnt}/cgroup.procs"):
                        return mnt
    except OSError:
        pass
    return None


class Group(Protocol):
    """Where a program's process tree lives: what :class:`Process` needs of it."""

    name: str
    join_path: str  # written with the child's pid before it execs ("" for none)

    def pids(self) -> list[int]: ...
    def freeze(self, on: bool) -> None: ...
    def kill(self) -> None: ...


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


class Cgroup:
    """A cgroup v2 directory owned by this run: freezer and kill for the whole tree."""

    def __init__(self, root: str, name: str | None = None) -> None:
        self.name = name or make_name()
        self.path = os.path.join(root, CGROUP_SUBDIR, self.name)
        os.makedirs(self.path)
        self.join_path = os.path.join(self.path, "cgroup.procs")

    def _events(self) -> dict[str, str]:
        with open(os.path.join(self.path, "cgroup.events")) as f:
            return dict(line.split() for line in f if line.strip())

    def pids(self) -> list[int]:
        try:
            with open(self.join_path) as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:  # removed: the tree is gone
            return []

    def freeze(self, on: bool) -> None:
        with open(os.path.join(self.path, "cgroup.freeze"), "w") as f:
            f.write("1" if on else "0")
        want = "1" if on else "0"
        _wait(
            lambda: self._events().get("frozen") == want, STOP_TIMEOUT, f"{self.path} frozen={want}"
        )

    def kill(self) -> None:
        """SIGKILL every process of the tree, wait until it is empty, remove the directory."""
        kill_cgroup(self.path)


def kill_cgroup(path: str) -> None:
    """Empty (``cgroup.kill``, else SIGKILL each pid) and remove the cgroup at ``path``."""

    def pids() -> list[int]:
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return []

    kill_file = os.path.join(path, "cgroup.kill")
    if os.path.exists(kill_file):
        with open(kill_file, "w") as f:
            f.write("1")
    else:
        for pid in pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    freeze = os.path.join(path, "cgroup.freeze")
    with contextlib.suppress(FileNotFoundError), open(freeze, "w") as f:
        f.write("0")  # a frozen tree dies only once thawed
    _wait(lambda: not pids(), STOP_TIMEOUT, f"the processes of {path} to exit")
    deadline = time.monotonic() + STOP_TIMEOUT
    while True:  # rmdir gets EBUSY until the last exiting task is released
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st is not None and st[3] == str(sid) and st[0] != "Z":
                out.append(int(d))
    return out


class Session:
    """The fallback group: the session the child leads, recorded for the reaper."""

    join_path = ""

    def __init__(self) -> None:
        self.name = make_name()
        self.sid = 0
        self.record = os.path.join(RECORDS, self.name)

    def started(self, pid: int) -> None:
        self.sid = pid
        os.makedirs(RECORDS, exist_ok=True)
        st = _stat(pid)
        Path(self.record).write_text(f"{pid} {st[18] if st else 0}\n")

    def pids(self) -> list[int]:
        return session_pids(self.sid) if self.sid else []

    def freeze(self, on: bool) -> None:
        def signal_all() -> bool:  # True once every member is stopped (state T)
            done = True
            for pid in self.pids():
                if on and (_stat(pid) or ["T"])[0] in "TtZX":
                    continue
                done = False
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP if on else signal.SIGCONT)
            return done or not on

        # a member may fork between listing and stopping: go round until all are stopped
        _wait(signal_all, STOP_TIMEOUT, f"session {self.sid} to {'stop' if on else 'go on'}")

    def kill(self) -> None:
        kill_session(self.sid)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.record)


def kill_session(sid: int) -> None:
    """SIGKILL (and SIGCONT) every member of session ``sid``; wait until none is left."""
    if not sid:
        return
    for _ in range(100):  # a member may fork while we kill: go round until empty
        pids = session_pids(sid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
    raise HarnessError(f"session {sid} still has processes after SIGKILL: {session_pids(sid)}")


def new_group(prefer_cgroup: bool = True) -> Group:
    """A cgroup if the cgroup2 mount is writable (and ``prefer_cgroup``), else a session."""
    root = cgroup2_root() if prefer_cgroup else None
    return Cgroup(root) if root is not None else Session()


class Process:
    """One program started inside a namespace, in its own group, its output in a file.

    ``workdir`` (made under the temp dir and named like the group, so the reaper finds it
    too) holds ``output.log`` (stdout and stderr) and ``files`` (name -> text), written
    before the program starts; ``{dir}`` in ``argv`` and in the files' text is replaced by
    the workdir's path (so configs keep pid files and logs there, nothing on the host)."""

    def __init__(
        self,
        argv: Sequence[str],
        ns_path: str,
        *,
        pass_fds: Sequence[int] = (),
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        group: Group | None = None,
        files: Mapping[str, str] | None = None,
    ) -> None:
        self.group = group or new_group()
        self.workdir = workdir or os.path.join(tempfile.gettempdir(), self.group.name)
        self.argv = [a.replace("{dir}", self.workdir) for a in argv]
        self.log = os.path.join(self.workdir, "output.log")
        self.stopped = False
        try:
            os.makedirs(self.workdir, exist_ok=True)
            for name, text in (files or {}).items():
                if "/" in name or name in ("", ".", ".."):
                    raise HarnessError(f"file name {name!r}: a plain name inside the workdir")
                Path(self.workdir, name).write_text(text.replace("{dir}", self.workdir))
            with open(self.log, "wb") as out:
                self.popen = subprocess.Popen(
                    ["sh", "-c", _JOIN, "sh", self.group.join_path, *isolated(self.argv, ns_path)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    pass_fds=tuple(pass_fds), env=env, cwd=self.workdir, start_new_session=True,
                )  # fmt: skip
            if isinstance(self.group, Session):
                self.group.started(self.popen.pid)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        """What the program (and its children) printed so far."""
        try:
            return Path(self.log).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def pids(self) -> list[int]:
        """Every live process of the tree (the first one may have exited: daemons)."""
        return self.group.pids()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Nothing in the tree runs inside the ``with`` body."""
        self.group.freeze(True)
        try:
            yield
        finally:
            self.group.freeze(False)

    def stop(self) -> None:
        """Kill the whole tree, reap the first child, remove the group and the workdir."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self.group.kill()
        finally:
            if hasattr(self, "popen"):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(STOP_TIMEOUT)
            if self.workdir.startswith(os.path.join(tempfile.gettempdir(), NAME_PREFIX)):
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Process {self.argv[0]} pid={self.popen.pid} group={self.group.name}>"


def reap(
    cgroup_dir: str = CGROUP_SUBDIR, records: str = RECORDS, tmp: str | None = None
) -> list[str]:
    """Kill and remove the program groups (and workdirs) of runs that are gone; their names."""
    gone: list[str] = []
    root = cgroup2_root()
    if root is not None:
        base = os.path.join(root, cgroup_dir)
        for name in _leftover_names(base):
            kill_cgroup(os.path.join(base, name))
            gone.append(name)
    for name in _leftover_names(records):
        path = os.path.join(records, name)
        with contextlib.suppress(OSError, ValueError, IndexError):
            sid, start = Path(path).read_text().split()[:2]
            st = _stat(int(sid))
            # the leader may be gone while its session lives on: kill by sid unless the
            # pid now belongs to a new process that leads another session
            if st is None or st[18] == start or st[3] != sid:
                kill_session(int(sid))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        gone.append(name)
    tmp = tmp or tempfile.gettempdir()
    for name in _leftover_names(tmp):
        shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
    return sorted(set(gone))


def _leftover_names(base: str) -> list[str]:
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(NAME_PREFIX) and not owner_alive(n))
