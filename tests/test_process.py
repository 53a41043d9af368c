"""bindlab.process: a program inside a namespace sees its /sys, lives in a group bindlab owns,
freezes with it, dies with it, and a SIGKILLed run's programs die at the next reap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bindlab import Namespace, process
from bindlab.process import Cgroup, Group, Process, Session, cgroup2_root

GROUPS: dict[str, Callable[[], Group]] = {"session": Session}
if cgroup2_root() is not None:
    GROUPS["cgroup"] = lambda: Cgroup(cgroup2_root() or "")


@pytest.fixture(params=sorted(GROUPS))
def group(request: pytest.FixtureRequest) -> Group:
    """Each kind of group in turn (the cgroup only where the cgroup2 mount is writable)."""
    return GROUPS[request.param]()


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_program_sees_the_namespaces_own_sys(netns: Namespace, group: Group) -> None:
    netns.add_link("bl-own0", kind="ifb")
    p = Process(["ls", "/sys/class/net"], netns.path, pass_fds=(netns.fd,), group=group)
    p.popen.wait(10)
    assert p.output().split() == ["bl-own0", "lo"]  # not one of the host's links
    p.stop()
    assert "bl-own0" not in os.listdir("/sys/class/net")


def test_files_and_dir_placeholder(netns: Namespace) -> None:
    p = Process(
        ["cat", "{dir}/conf"], netns.path, pass_fds=(netns.fd,), files={"conf": "at {dir}\n"}
    )
    p.popen.wait(10)
    assert p.output() == f"at {p.workdir}\n"
    p.stop()
    assert not os.path.exists(p.workdir)  # nothing left on the host


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:  # a transient process (the sysfs mount) is gone
        return ""


def cpu_ns(pid: int) -> int:
    """Nanoseconds ``pid`` has run (the first field of /proc/PID/schedstat)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def test_freeze_stops_every_process_of_the_tree(netns: Namespace, group: Group) -> None:
    spin = {"spin": "while :; do :; done\n"}  # a busy loop, run by parent and child
    argv = ["sh", "-c", "sh {dir}/spin & exec sh {dir}/spin"]
    with Process(argv, netns.path, pass_fds=(netns.fd,), group=group, files=spin) as p:
        loop = f"sh\0{p.workdir}/spin\0"

        def spinning() -> list[int]:
            return [q for q in p.pids() if cmdline(q) == loop]

        wait_for(lambda: len(spinning()) == 2, "both loops to run")
        pids = spinning()
        with p.frozen():
            before = [cpu_ns(pid) for pid in pids]
            time.sleep(0.1)
            assert [cpu_ns(pid) for pid in pids] == before  # neither ran at all
        wait_for(
            lambda: all(cpu_ns(q) > b for q, b in zip(pids, before, strict=True)),
            "both to run again",
        )


def test_stop_kills_the_whole_tree(netns: Namespace, group: Group) -> None:
    argv = ["sh", "-c", "sleep 600 & echo $! > {dir}/pid; exec sleep 600"]
    p = Process(argv, netns.path, pass_fds=(netns.fd,), group=group)
    pidfile = Path(p.workdir, "pid")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "", "the child's pid")
    child = int(pidfile.read_text())
    wait_for(lambda: len(p.pids()) == 2, "both processes in the group")
    p.stop()
    assert not alive(child) and not alive(p.pid)
    assert p.pids() == []


@pytest.mark.skipif(cgroup2_root() is None, reason="the cgroup2 mount is not writable here")
def test_a_daemon_that_leaves_the_session_still_dies_with_its_cgroup(netns: Namespace) -> None:
    argv = ["sh", "-c", "setsid sleep 600 & sleep 0.05; echo $! > {dir}/pid"]  # main exits
    p = Process(argv, netns.path, pass_fds=(netns.fd,))
    pidfile = Path(p.workdir, "pid")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "", "the daemon's pid")
    daemon = int(pidfile.read_text())
    assert p.pids() == [daemon]
    p.stop()
    assert not alive(daemon)


CHILD_TEST = """
    import pathlib, sys, time

    # a server that forks a worker, as daemons do: both must die
    SERVER = "import os, socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); " \\
             "s.bind(('192.0.2.1', 53)); os.fork(); time.sleep(600)"

    def test_hang(netns):
        netns.add_local_route("192.0.2.0/24")
        prog = netns.spawn([sys.executable, "-c", SERVER], "dns")
        assert len(prog.pids()) == 2
        pathlib.Path({marker!r}).write_text(
            prog.process.group.name + " " + " ".join(map(str, prog.pids())))
        time.sleep(120)
"""


@pytest.mark.privileged
def test_sigkilled_pytest_run_leaves_programs_only_until_the_reaper(tmp_path: Path) -> None:
    marker = tmp_path / "name"
    (tmp_path / "test_child.py").write_text(textwrap.dedent(CHILD_TEST.format(marker=str(marker))))
    # the child's groups, records and workdirs in places of its own: concurrent runs on this
    # host reap leftovers of dead runs too, and would race this test's reap
    cgdir, records, tmp = f"bindlab-test-{os.getpid()}", tmp_path / "procs", tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "BINDLAB_CGROUP_DIR": cgdir, "BINDLAB_PROCS_DIR": str(records),
           "TMPDIR": str(tmp)}  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env=env,
    )  # fmt: skip
    try:
        wait_for(lambda: marker.exists() and bool(marker.read_text()), "the child's program", 60)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    name, *pids = marker.read_text().split()
    root = cgroup2_root()
    try:
        # SIGKILL ran no cleanup: the program and its worker outlive the run...
        assert len(pids) == 2 and all(alive(int(pid)) for pid in pids)
        assert (tmp / name).is_dir()
        # ...until the next run's reaper kills them and removes their group and directory.
        assert process.reap(cgdir, str(records), str(tmp)) == [name]
        assert not any(alive(int(pid)) for pid in pids)
        assert not (tmp / name).exists() and not (records / name).exists()
        if root is not None:
            assert not os.path.exists(os.path.join(root, cgdir, name))
    finally:
        process.reap(cgdir, str(records), str(tmp))  # whatever happened above
        if root is not None and os.path.isdir(os.path.join(root, cgdir)):
            os.rmdir(os.path.join(root, cgdir))
