"""The reaper: which `bl-` namespaces count as leftovers, and a SIGKILLed run is cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from bindlab import Namespace, reaper
from bindlab.reaper import RUN_NETNS, process_start_time


def touch(d: Path, name: str) -> str:
    (d / name).write_text("")
    return name


def test_leftovers_are_bl_names_whose_owner_is_gone(tmp_path: Path) -> None:
    me, start = os.getpid(), process_start_time(os.getpid())
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = touch(tmp_path, f"bl-{me}-{start}-abc123")
    recycled = touch(tmp_path, f"bl-{me}-1-abc123")  # our pid, but another start time
    gone = touch(tmp_path, f"bl-{dead.pid}-{start}-00ff00")
    touch(tmp_path, "bl-handmade")  # not ours to judge
    touch(tmp_path, "other-ns")
    assert reaper.leftovers(str(tmp_path)) == sorted([recycled, gone])
    assert reaper.reap(str(tmp_path)) == sorted([recycled, gone])
    assert sorted(os.listdir(tmp_path)) == sorted([alive, "bl-handmade", "other-ns"])


def test_process_start_time_is_the_start_time() -> None:
    """Field 22 of /proc/PID/stat, in clock ticks since boot: it never changes while the
    process runs (its neighbours, vsize and rss, do) and is not after now."""
    me = os.getpid()
    start = process_start_time(me)
    grown = bytearray(64 << 20)  # vsize grows by 64 MiB
    assert process_start_time(me) == start and grown
    with open("/proc/uptime") as f:
        now = float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK")
    assert start is not None and int(start) <= now
    child = subprocess.Popen(["sleep", "5"])
    try:
        later = process_start_time(child.pid)
        assert later is not None and int(start) <= int(later) <= now + 500
    finally:
        child.kill()
        child.wait()


def test_missing_run_dir_is_empty(tmp_path: Path) -> None:
    assert reaper.reap(str(tmp_path / "nope")) == []


@pytest.mark.privileged
def test_named_namespace_is_removed_on_close() -> None:
    ns = Namespace(named=True)
    assert ns.name is not None and ns.name.startswith("bl-")
    path = Path(RUN_NETNS, ns.name)
    assert path.exists() and reaper.owner_alive(ns.name)
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert ns.name in out
    ns.close()
    assert not path.exists()


CHILD_TEST = """
    import pathlib, time

    def test_hang(netns_factory):
        ns = netns_factory(named=True)
        ns.add_link("d0", kind="dummy")
        ns.add_local_route("192.0.2.0/24")
        pathlib.Path({marker!r}).write_text(ns.name)
        time.sleep(120)
"""


@pytest.mark.privileged
def test_sigkilled_pytest_run_leaves_only_what_the_reaper_removes(tmp_path: Path) -> None:
    marker = tmp_path / "name"
    (tmp_path / "test_child.py").write_text(textwrap.dedent(CHILD_TEST.format(marker=str(marker))))
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            assert child.poll() is None, "the child pytest run ended before it made its namespace"
            assert time.monotonic() < deadline, "the child never made its namespace"
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    name = marker.read_text()
    # SIGKILL ran no cleanup: the named namespace (and its link) outlives the run...
    assert Path(RUN_NETNS, name).exists()
    links = subprocess.run(["ip", "-n", name, "-o", "link"], capture_output=True, text=True)
    assert "d0" in links.stdout
    # ...until the next run's reaper removes it.
    assert name in reaper.leftovers()
    assert name in reaper.reap()
    assert not Path(RUN_NETNS, name).exists()
    assert (
        name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
