"""The host guard: one snapshot and one comparison per run (the controller's under xdist),
in every session, naming each class of change.

The runs that change "the host" are child pytest runs started inside a fresh network
namespace with a private mount namespace and its own /run/netns: to the child (controller
and workers) that namespace *is* the host, the guard code cannot tell the difference, and
the machine's real host namespace, which other runs on this machine guard at the same
time, is never touched. Closing the child's namespaces undoes every change; each test
checks the real host afterwards all the same.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from bindlab import Namespace, hostguard

# The child runs hold no property test: spare them the ~0.2 s the hypothesis plugin spends
# importing hypothesis for its terminal summary.
NO_HYPOTHESIS = "no:hypothesispytest"

# the "host" the child runs in: a link for the neighbour, and a route the child's one
# will differ from in metric only
HOST_SETUP = """
set -e
mkdir -p /run/netns && mount -t tmpfs bl-guard-test /run/netns
ip link set lo up
ip link add bl-nb0 type ifb && ip link set bl-nb0 up
ip route add 198.51.100.0/24 dev lo metric 5
exec "$@"
"""

CHANGES = {
    "address": ("ip addr add 198.51.100.77/32 dev lo", "addresses: added dev=lo"),
    "route_metric": (
        "ip route add 198.51.100.0/24 dev lo metric 7",
        "routes: added family=2 table=254",
    ),
    "rule": ("ip rule add from 198.51.100.0/24 table 100 priority 1000", "rules: added family=2"),
    "rule6": ("ip -6 rule add from 2001:db8:77::/64 table 100", "rules: added family=10"),
    "neighbour": (
        "ip neigh add 198.51.100.78 lladdr 02:00:00:00:00:77 dev bl-nb0 nud permanent",
        "neighbours: added dev=bl-nb0",
    ),
    "nft_table": ("nft add table inet bl_guard_test", 'nftables: added {"table"'),
    "sysctl": (
        "sysctl -qw net.ipv4.tcp_fin_timeout=31",
        "sysctl net.ipv4.tcp_fin_timeout: '60' -> '31'",
    ),
}
# what identifies each change in the guard's message besides its prefix
DETAIL = {
    "address": "address=198.51.100.77",
    "route_metric": "priority=7",
    "rule": "priority=1000",
    "rule6": "src=2001:db8:77::",
    "neighbour": "lladdr=02:00:00:00:00:77",
    "nft_table": '"name": "bl_guard_test"',
    "sysctl": "",
}


def run_child(tmp_path: Path, tests: str, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest on ``tests`` inside a fresh network + mount namespace that is its host."""
    (tmp_path / "test_child.py").write_text(textwrap.dedent(tests))
    argv = [
        *("unshare", "--net", "--mount", "--propagation", "private", "--"),
        *("sh", "-c", HOST_SETUP, "host"),
        *(
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            NO_HYPOTHESIS,
            "-q",
            *args,
        ),
    ]
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)


@pytest.fixture
def real_host():
    """The real host's snapshot; the test fails if the host differs after it."""
    before = hostguard.snapshot()
    yield before
    assert hostguard.diff(before, hostguard.snapshot()) == []


def test_diff_names_each_change() -> None:
    empty = {p: set() for p in hostguard.NETLINK_PARTS}
    before = {**empty, "nftables": set(), "sysctls": {"net/a": "1"}, "mounts": set()}
    after = {
        **empty,
        "links": {"index=9 ifname=x0"},
        "nftables": None,  # not compared when either side could not read it
        "sysctls": {"net/a": "2"},
        "mounts": {"/run/netns/foo"},
    }
    assert hostguard.diff(before, after) == [
        "links: added index=9 ifname=x0",
        "sysctl net.a: '1' -> '2'",
        "/run/netns: added mount /run/netns/foo",
    ]
    assert hostguard.diff(after, after) == []


def test_sysctls_of_a_module_loaded_during_the_run_are_a_note_not_a_change() -> None:
    """A modular kernel (the 6.1 VM) autoloads sctp on first use: its defaults appear."""
    empty = {p: set() for p in hostguard.NETLINK_PARTS}
    base = {**empty, "nftables": set(), "mounts": set()}
    new = {f"net/sctp/k{i}": "1" for i in range(5)}
    before = {**base, "sysctls": {"net/a": "1"}, "modules": {"tun"}}
    after = {**base, "sysctls": {"net/a": "1", **new}, "modules": {"tun", "sctp"}}
    assert hostguard.diff(before, after) == []
    assert hostguard.notes(before, after) == [
        "kernel modules loaded during the run: sctp (5 new net.* sysctls)"
    ]
    # without a module load the same keys are a change, and a changed value always is
    assert hostguard.diff(before, {**after, "modules": {"tun"}}) == [
        "sysctls: added 5 keys under net.sctp"
    ]
    changed = {**after, "sysctls": {**after["sysctls"], "net/a": "2"}}
    assert hostguard.diff(before, changed) == ["sysctl net.a: '1' -> '2'"]


def test_bl_mounts_of_other_runs_are_not_this_runs_changes() -> None:
    empty = {p: set() for p in hostguard.NETLINK_PARTS}
    snap = {**empty, "nftables": set(), "sysctls": {}}
    mine, other = "/run/netns/bl-1-100-aaaaaa", "/run/netns/bl-2-200-bbbbbb"
    before = {**snap, "mounts": {"/run/netns/bl-3-300-cccccc"}}  # gone: its owner's business
    after = {**snap, "mounts": {mine, other}}
    assert hostguard.diff(before, after, owners={"1-100"}) == [
        f"/run/netns: this run left named namespace {mine} (its owner exited)"
    ]


@pytest.mark.privileged
def test_heavy_namespace_work_leaves_the_host_unchanged(real_host) -> None:
    with Namespace(named=True) as ns:
        ns.add_link("d0", kind="dummy", addrs=["203.0.113.1/24"])
        ns.add_local_route("192.0.2.0/24")
        ns.sysctl("net.ipv4.ip_local_port_range", "40000 40001")
        ns.sysctl("net.ipv4.tcp_fin_timeout", 31)
        ns.run(["nft", "add", "table", "inet", "bl_inside"])
        ns.run(["ip", "rule", "add", "from", "192.0.2.0/24", "table", "100"])
        ns.tcp_listener("192.0.2.1:80", label="web")
        assert ns.probe(["tcp 198.18.0.1:1 -> 192.0.2.1:80"]) == {
            "tcp 198.18.0.1:1 -> 192.0.2.1:80": "web"
        }
        # ...and the snapshot taken inside the namespace does see that work
        with ns.enter():
            inside = hostguard.snapshot()
        seen = "\n".join(hostguard.diff(real_host, inside))
        for what in ("d0", "bl_inside", "tcp_fin_timeout", "table=100"):
            assert what in seen


@pytest.mark.privileged
def test_xdist_controller_fails_the_run_and_names_every_change(tmp_path, real_host) -> None:
    tests = "".join(
        f"def test_{name}():\n    import subprocess\n    subprocess.run({cmd!r}, shell=True, check=True)\n\n"
        for name, (cmd, _) in CHANGES.items()
    )
    tests += (
        "def test_named_namespace_left_behind():\n"
        "    from bindlab.netns import NetNS\n"
        "    NetNS(named=True)  # never closed\n"
    )
    proc = run_child(tmp_path, tests, "-n", "4")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "8 passed" in out and "bindlab: the HOST namespace changed during this run" in out
    for name, (_, message) in CHANGES.items():
        line = next((x for x in out.splitlines() if x.startswith(message)), None)
        assert line is not None and DETAIL[name] in line, f"{name}: {message!r} not in\n{out}"
    assert "/run/netns: this run left named namespace /run/netns/bl-" in out, out
    assert out.count("bindlab: the HOST namespace changed") == 1  # the controller's, once


@pytest.mark.privileged
def test_guard_holds_in_a_session_without_namespaces_and_stays_quiet_when_clean(
    tmp_path, real_host
) -> None:
    change = "def test_a():\n    import os\n    os.system('ip addr add 198.51.100.77/32 dev lo')\n"
    proc = run_child(tmp_path, change)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "addresses: added dev=lo" in out, out
    clean = "def test_b(netns_factory):\n    netns_factory(named=True).run(['true'])\n"
    proc = run_child(tmp_path, clean, "-n", "2")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "HOST" not in out, out
