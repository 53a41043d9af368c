"""Name ``bl-`` namespaces and remove those left under /run/netns by runs whose process is gone.

A named namespace is called ``bl-<pid>-<starttime>-<rand>``: it is a leftover when no
process ``pid`` with that start time exists (so a recycled pid does not keep it alive).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets

# where named namespaces are bind-mounted (`ip netns` looks there); BINDLAB_NETNS_DIR moves it
RUN_NETNS = os.environ.get("BINDLAB_NETNS_DIR", "/run/netns")
NAME_PREFIX = "bl-"
MNT_DETACH = 0x2  # <linux/mount.h>

_NAME = re.compile(rf"^{re.escape(NAME_PREFIX)}(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]+\Z")
_libc = ctypes.CDLL(None, use_errno=True)


def process_start_time(pid: int) -> str | None:
    """The start time (clock ticks since boot) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after its closing paren.
    return stat.rsplit(")", 1)[1].split()[19]


def owner_id(pid: int | None = None) -> str:
    """``<pid>-<starttime>`` of this process (or ``pid``): the owner part of its ``bl-`` names."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{process_start_time(pid)}"


def make_name() -> str:
    """A fresh ``bl-`` name that tells the reaper who owns it."""
    return f"{NAME_PREFIX}{owner_id()}-{secrets.token_hex(3)}"


def children(pid: int | None = None) -> list[int]:
    """The pids of the live child processes of ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if int(ppid) == pid:
            out.append(int(entry))
    return out


def owner_of(name: str) -> str | None:
    """The ``<pid>-<starttime>`` owner part of a ``bl-`` name, None for a foreign name."""
    m = _NAME.match(name)
    return f"{m['pid']}-{m['start']}" if m else None


def owner_alive(name: str) -> bool:
    """True if the process that made namespace ``name`` still runs (or the name is foreign)."""
    m = _NAME.match(name)
    if not m:
        return True  # not ours to judge: never reap what we cannot attribute
    return process_start_time(int(m["pid"])) == m["start"]


def remove_named(name: str, run_dir: str = RUN_NETNS) -> None:
    """Unmount and delete ``run_dir/name`` (as ``ip netns delete`` does)."""
    path = os.path.join(run_dir, name)
    _libc.umount2(path.encode(), MNT_DETACH)  # fails harmlessly if it is not a mount point
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def leftovers(run_dir: str = RUN_NETNS) -> list[str]:
    """Names of ``bl-`` namespaces whose owner is dead."""
    try:
        names = os.listdir(run_dir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(NAME_PREFIX) and not owner_alive(n))


def reap(run_dir: str = RUN_NETNS) -> list[str]:
    """Remove every leftover ``bl-`` namespace; return the names removed."""
    gone = leftovers(run_dir)
    for name in gone:
        remove_named(name, run_dir)
    return gone
