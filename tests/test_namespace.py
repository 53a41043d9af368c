"""Namespace lifecycle, thread-correct enter(), external commands, and configuration errors."""

from __future__ import annotations

import json
import os
import re
import socket
import threading

import pytest
from bindlab import CommandFailed, ConfigError, HarnessError, Namespace, SysctlError
from bindlab.netns import current_netns_fd


def netns_id(fd: int | None = None) -> str:
    return (
        os.readlink("/proc/thread-self/ns/net")
        if fd is None
        else os.readlink(f"/proc/self/fd/{fd}")
    )


def test_enter_switches_only_this_thread_and_restores(netns: Namespace) -> None:
    host = netns_id()
    inside = netns_id(netns.fd)
    assert inside != host
    seen: dict[str, str] = {}
    entered, looked = threading.Event(), threading.Event()

    def other() -> None:
        entered.wait(5)
        seen["other"] = netns_id()
        looked.set()

    t = threading.Thread(target=other)
    t.start()  # started before enter(): a thread made inside would inherit the namespace
    with netns.enter():
        assert netns_id() == inside
        entered.set()
        looked.wait(5)
    t.join()
    assert seen["other"] == host  # the other thread stayed where it was
    assert netns_id() == host


def test_enter_restores_after_an_exception(netns: Namespace) -> None:
    host = netns_id()
    with pytest.raises(RuntimeError), netns.enter():
        raise RuntimeError("boom")
    assert netns_id() == host


def test_enter_from_a_worker_thread(netns: Namespace) -> None:
    """setns is per thread: entering from a worker must not move the main thread."""
    host = netns_id()
    seen: list[str] = []

    def work() -> None:
        with netns.enter():
            seen.append(netns_id())
        seen.append(netns_id())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen[0] == netns_id(netns.fd) and seen[1] == host and netns_id() == host


def test_close_releases_sockets_and_is_idempotent() -> None:
    ns = Namespace()
    s = ns.tcp_listener("127.0.0.1:80", label="web")
    raw = ns.socket("udp", 6)
    ns.close()
    assert s.fileno() == -1 and raw.fileno() == -1
    ns.close()
    with pytest.raises(Exception, match="closed"):
        ns.enter().__enter__()


def test_lo_is_up_and_only_lo_exists(netns: Namespace) -> None:
    out = json.loads(netns.run(["ip", "-j", "link"]).stdout)
    assert [(i["ifname"], "UP" in i["flags"]) for i in out] == [("lo", True)]


def test_run_reports_failures_with_output(netns: Namespace) -> None:
    with pytest.raises(CommandFailed) as e:
        netns.run(["ip", "link", "show", "nosuchdev"])
    assert e.value.returncode != 0 and "nosuchdev" in str(e.value)
    assert "does not exist" in e.value.stderr


def test_sysctl_is_per_namespace(netns: Namespace) -> None:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        host = f.read().strip()
    assert netns.sysctl("net.ipv4.ip_local_port_range", "40000 40511") == "40000\t40511"
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        assert f.read().strip() == host


@pytest.mark.parametrize(
    ("key", "culprit"),
    [
        ("net.ipv4.no_such_knob", "unknown sysctl 'net.ipv4.no_such_knob'"),
        ("kernel.pid_max", "only per-namespace 'net.*' keys"),
        ("net..ipv4", "only per-namespace"),
        ("net.ipv4.conf.nosuchdev.rp_filter", "unknown sysctl"),
    ],
)
def test_sysctl_errors_name_the_key(netns: Namespace, key: str, culprit: str) -> None:
    with pytest.raises(SysctlError) as e:
        netns.sysctl(key, 1)
    assert culprit in str(e.value)


def test_sysctl_refused_value(netns: Namespace) -> None:
    with pytest.raises(
        SysctlError, match=re.escape("net.ipv4.ip_local_port_range = 'x y' refused")
    ):
        netns.sysctl("net.ipv4.ip_local_port_range", "x y")


@pytest.mark.parametrize(
    "prefix", ["192.0.2.1/24", "192.0.2.0/33", "2001:db8::1/64", "nonsense", ""]
)
def test_invalid_local_route_prefix(netns: Namespace, prefix: str) -> None:
    with pytest.raises(ConfigError) as e:
        netns.add_local_route(prefix)
    assert repr(prefix) in str(e.value)


def test_local_routes_deliver_whole_prefix(netns: Namespace) -> None:
    netns.add_local_route("192.0.2.0/24")
    netns.add_local_route("2001:db8:1::/64")
    routes = json.loads(netns.run(["ip", "-j", "route", "show", "table", "local"]).stdout)
    routes += json.loads(netns.run(["ip", "-6", "-j", "route", "show", "table", "local"]).stdout)
    assert {(r["dst"], r["type"]) for r in routes} >= {
        ("192.0.2.0/24", "local"),
        ("2001:db8:1::/64", "local"),
    }


def test_add_link_dummy_or_its_stand_in(netns: Namespace) -> None:
    from bindlab import features

    link = netns.add_link("d0", kind="dummy", addrs=["203.0.113.1/24", "2001:db8:d0::1/64"])
    if features.detect("LINK_DUMMY").ok:
        assert link.kind == "dummy" and link.substitute is None
    else:
        assert link.kind == "ifb" and "CONFIG_DUMMY" in (link.substitute or "")
    assert link.requested_kind == "dummy" and link.index == netns.link_index("d0")
    info = json.loads(netns.run(["ip", "-j", "-d", "addr", "show", "d0"]).stdout)[0]
    assert info["linkinfo"]["info_kind"] == link.kind
    addrs = {(a["local"], a.get("nodad", False)) for a in info["addr_info"]}
    assert ("203.0.113.1", False) in addrs and ("2001:db8:d0::1", True) in addrs
    # the IPv6 address is usable at once (nodad): bind succeeds
    with netns.enter(), socket.socket(socket.AF_INET6) as s:
        s.bind(("2001:db8:d0::1", 0))


@pytest.mark.parametrize(
    ("name", "kind", "addrs", "culprit"),
    [
        ("d0", "wormhole", [], "unknown link kind 'wormhole'"),
        ("a-name-longer-than-15", "dummy", [], "invalid interface name"),
        ("d0", "dummy", ["203.0.113.1/33"], "invalid address '203.0.113.1/33'"),
    ],
)
def test_add_link_errors_leave_nothing(netns: Namespace, name, kind, addrs, culprit) -> None:
    with pytest.raises(ConfigError) as e:
        netns.add_link(name, kind=kind, addrs=addrs)
    assert culprit in str(e.value)
    assert [i["ifname"] for i in json.loads(netns.run(["ip", "-j", "link"]).stdout)] == ["lo"]


def test_namespace_fd_is_cloexec_and_netns_fd_helper() -> None:
    fd = current_netns_fd()
    try:
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)


def test_run_refuses_a_closed_namespace_even_when_its_fd_number_is_reused() -> None:
    ns = Namespace()
    fd = ns.fd
    ns.close()
    host = os.open("/proc/self/ns/net", os.O_RDONLY)
    reused = os.dup2(host, fd)  # the host's namespace now sits on the freed number
    os.close(host)
    try:
        with pytest.raises(HarnessError, match=r"closed: cannot run 'ip -br link'"):
            ns.run(["ip", "-br", "link"])
    finally:
        os.close(reused)


def test_run_children_see_the_namespace_sysfs_not_the_host(netns: Namespace) -> None:
    netns.add_link("bl-sys0", kind="ifb")
    host = set(os.listdir("/sys/class/net"))
    inside = netns.run(["sh", "-c", "ls /sys/class/net/ && cat /sys/class/net/*/ifindex"])
    names = inside.stdout.split()[:2]
    assert sorted(names) == ["bl-sys0", "lo"], inside.stdout
    assert not (host - {"lo"}) & set(names)  # no host device is visible inside
    assert "bl-sys0" not in host
    # the host's devices cannot be read (or written) through /sys in the namespace
    for dev in sorted(host - {"lo"}):
        proc = netns.run(["cat", f"/sys/class/net/{dev}/mtu"], check=False)
        assert proc.returncode != 0 and "No such file" in proc.stderr
    # the private mount is the child's alone: the host's /sys is untouched
    assert set(os.listdir("/sys/class/net")) == host
