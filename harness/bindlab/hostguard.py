"""Prove that a run changed nothing in the host namespace: one snapshot before, one after.

A snapshot (:func:`snapshot`) holds links, addresses, routes of every table with all their
attributes (metric included), rules, permanent neighbours (v4 and v6), the nftables
ruleset, every ``net.*`` sysctl and the mounts under ``/run/netns``; :mod:`bindlab.hoststate`
reads them and lists what is left out because it changes by itself. :func:`diff` names each
change. :class:`Guard` is one run's guard: under pytest-xdist the controller holds it and
the workers report their process ids, so that named namespaces a worker left behind are
told from those other runs on the same machine own.

Example::

    guard = Guard()
    ...  # the run
    assert guard.finish() == []
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from bindlab import hoststate
from bindlab.reaper import NAME_PREFIX, owner_alive, owner_id, owner_of

NETLINK_PARTS = ("links", "addresses", "routes", "rules", "neighbours")
GROUP_KEYS = 3  # more sysctl keys than this appearing in one directory read as one line


def snapshot() -> dict[str, Any]:
    """Everything the guard compares, read from the calling thread's namespace.

    ``skipped`` maps a part that could not be read (nftables without ``nft``) to the reason.
    """
    snap: dict[str, Any] = hoststate.netlink()
    snap["nftables"], why = hoststate.nftables()
    snap["skipped"] = {} if why is None else {"nftables": why}
    snap["sysctls"] = hoststate.sysctls()
    snap["mounts"] = hoststate.netns_mounts()
    snap["modules"] = hoststate.modules()
    return snap


def _sets(part: str, before: set[str], after: set[str]) -> list[str]:
    return [f"{part}: removed {x}" for x in sorted(before - after)] + [
        f"{part}: added {x}" for x in sorted(after - before)
    ]


def _sysctls(before: dict[str, str], after: dict[str, str], excuse_added: bool) -> list[str]:
    """Changed values, and keys that came or went (new keys are excused when a kernel module
    was loaded during the run: a modular kernel autoloads sctp, vrf, ... on first use, and
    their defaults appear; nothing of the host's configuration changed)."""
    out = [
        f"sysctl {k.replace('/', '.')}: {before[k]!r} -> {after[k]!r}"
        for k in sorted(before.keys() & after.keys())
        if before[k] != after[k]
    ]
    for what, keys in (
        ("removed", before.keys() - after.keys()),
        ("added", set() if excuse_added else after.keys() - before.keys()),
    ):
        by_dir: dict[str, list[str]] = defaultdict(list)
        for k in keys:
            by_dir[os.path.dirname(k)].append(k)
        for d, ks in sorted(by_dir.items()):
            if len(ks) > GROUP_KEYS:
                out.append(f"sysctls: {what} {len(ks)} keys under {d.replace('/', '.')}")
            else:
                out += [f"sysctl {k.replace('/', '.')}: {what}" for k in sorted(ks)]
    return out


def _mounts(before: set[str], after: set[str], owners: set[str]) -> list[str]:
    """Foreign mounts that came or went, and ``bl-`` namespaces this run made and left.

    ``bl-`` names of other processes come and go with the runs that own them (and the
    reapers of other runs remove dead ones): they are not this run's changes.
    """
    out = []
    for point in sorted(before ^ after):
        name = os.path.basename(point)
        if not name.startswith(NAME_PREFIX) or owner_of(name) is None:
            out.append(f"/run/netns: {'added' if point in after else 'removed'} mount {point}")
    for point in sorted(after):
        name = os.path.basename(point)
        if owner_of(name) in owners:
            alive = "its owner still runs" if owner_alive(name) else "its owner exited"
            out.append(f"/run/netns: this run left named namespace {point} ({alive})")
    return out


def notes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What changed on the host that is not a change of its configuration (informational)."""
    loaded = sorted(after.get("modules", set()) - before.get("modules", set()))
    if not loaded:
        return []
    new = len(after["sysctls"].keys() - before["sysctls"].keys())
    return [f"kernel modules loaded during the run: {', '.join(loaded)} ({new} new net.* sysctls)"]


def diff(before: dict[str, Any], after: dict[str, Any], owners: Iterable[str] = ()) -> list[str]:
    """One line per difference between two snapshots (empty when the host is unchanged).

    ``owners`` are the ``<pid>-<starttime>`` ids of this run's processes: a ``bl-``
    namespace of theirs still mounted is reported as left behind.
    """
    out: list[str] = []
    for part in NETLINK_PARTS:
        out += _sets(part, before[part], after[part])
    if before["nftables"] is not None and after["nftables"] is not None:
        out += _sets("nftables", before["nftables"], after["nftables"])
    loaded = after.get("modules", set()) - before.get("modules", set())
    out += _sysctls(before["sysctls"], after["sysctls"], excuse_added=bool(loaded))
    out += _mounts(before["mounts"], after["mounts"], set(owners))
    return out


class Guard:
    """One run's host guard: the snapshot taken at its start, the run's process ids, and
    what the comparison at its end cost.

    Example::

        guard = Guard()
        guard.add_owner(worker_owner_id)  # each process of the run that may name namespaces
        changes = guard.finish()
    """

    def __init__(self) -> None:
        t = time.perf_counter()
        self.before = snapshot()
        self.owners = {owner_id()}
        self.notes: list[str] = []  # informational lines of the last finish()
        self.cost_ms = (time.perf_counter() - t) * 1000

    @property
    def skipped(self) -> dict[str, str]:
        """Parts not compared, with the reason."""
        return dict(self.before["skipped"])

    def add_owner(self, owner: str) -> None:
        """Count ``owner`` (``<pid>-<starttime>``, :func:`bindlab.reaper.owner_id`) as this run's."""
        self.owners.add(owner)

    def finish(self) -> list[str]:
        """Snapshot again and return the changes (one line each); adds to :attr:`cost_ms`."""
        t = time.perf_counter()
        after = snapshot()
        changes = diff(self.before, after, self.owners)
        self.notes = notes(self.before, after)
        self.cost_ms += (time.perf_counter() - t) * 1000
        return changes

    def describe(self) -> str:
        """What was compared, in one line."""
        n = len(self.before["sysctls"])
        parts = [*NETLINK_PARTS, "nftables", f"{n} net.* sysctls", "/run/netns mounts"]
        if "nftables" in self.skipped:
            parts.remove("nftables")
        text = ", ".join(parts)
        for part, why in self.skipped.items():
            text += f" ({part} not compared: {why})"
        return text
