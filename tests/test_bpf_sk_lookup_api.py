"""The sk_lookup surface beyond prefix/port: test runs without packets, what is attached,
interface bindings (issue 13, item 3)."""

from __future__ import annotations

import os

import pytest
from bindlab import ConfigError, Namespace
from bindlab.bpf import Steer, sk_lookup

pytestmark = pytest.mark.requires("CLANG_BPF", "BPF_SK_LOOKUP")


def _table(ns: Namespace) -> list[str]:
    """Bindings over v4 and v6, TCP and UDP, specific and any port, plus a closed target."""
    ns.add_local_route("192.0.2.0/24")
    ns.add_local_route("2001:db8::/64")
    ns.sysctl("net.ipv6.ip_nonlocal_bind", 1)
    web = ns.tcp_listener("127.0.0.1:8080", "web")
    any4 = ns.tcp_listener("127.0.0.1:8081", "any4")
    web6 = ns.tcp_listener("[::1]:8080", "web6")
    dns = ns.udp_socket("127.0.0.1:5353", "dns")
    gone = ns.tcp_listener("127.0.0.1:8082", "gone")
    ns.tcp_listener("0.0.0.0:22", "regular")  # the regular lookup's socket
    d = sk_lookup(ns)
    d.bind("tcp", "192.0.2.0/25", 80, web)
    d.bind("tcp", "192.0.2.0/24", None, any4)
    d.bind("tcp", "2001:db8::/64", 443, web6)
    d.bind("udp", "192.0.2.0/24", 53, dns)
    d.bind("tcp", "192.0.2.128/26", 80, gone)
    gone.close()  # the binding stays, its socket left the SOCKMAP: drop
    rows = []
    for i, dst in enumerate(["192.0.2.1", "192.0.2.127", "192.0.2.129", "192.0.2.200"]):
        rows += [f"tcp 198.18.0.{i + 1}:{40000 + i} -> {dst}:{port}" for port in (80, 22)]
        rows.append(f"udp 198.18.0.{i + 1}:{41000 + i} -> {dst}:53")
    rows += [
        "tcp [2001:db8:ffff::1]:40000 -> [2001:db8::1]:443",
        "tcp [2001:db8:ffff::1]:40001 -> [2001:db8::1]:80",
        "udp 198.18.0.9:40000 -> 192.0.2.1:54",
        "tcp 198.18.0.9:40000 -> 203.0.113.1:22",
        "tcp 198.18.0.9:40001 -> 192.0.2.1:23",
        "udp [2001:db8:ffff::1]:40002 -> [2001:db8::1]:53",
        "tcp [2001:db8:ffff::1]:40003 -> [2001:db8::2]:443",
        "tcp 198.18.0.10:40000 -> 192.0.2.64:80",
    ]
    assert len(rows) == 18 + 2
    return rows


def test_test_run_agrees_with_injection_on_20_flows(netns: Namespace) -> None:
    rows = _table(netns)
    d = sk_lookup(netns)
    labels = {lbl for lbl, _ in netns.sockets.values()} - {"regular"}
    probed = netns.probe(rows)
    for row in rows:
        verdict, label = d.test_run(row)
        got = probed[row]
        if label is not None:
            assert (verdict, got) == ("pass", label), row
        elif verdict == "drop":
            assert got in ("RST", "ICMP"), row
        else:  # no binding: the regular lookup decided, never one of the dispatcher's
            assert got not in labels, row
    seen = {d.test_run(r) for r in rows}
    assert {("pass", "web"), ("pass", "any4"), ("pass", "web6"), ("pass", "dns")} <= seen
    assert ("drop", None) in seen and ("pass", None) in seen


def test_attached_lists_programs_in_run_order_with_links(netns: Namespace) -> None:
    assert netns.sk_lookup_attached() == []
    sk_lookup(netns)
    s = Steer(netns, "pass")
    progs = netns.sk_lookup_attached()
    assert [p.name for p in progs] == ["dispatch", "steer"]
    assert all(p.netns_ino == os.stat(f"/proc/self/fd/{netns.fd}").st_ino for p in progs)
    assert all(p.link_id is not None for p in progs)
    assert len({p.prog_id for p in progs}) == 2
    s.close()
    assert [p.name for p in netns.sk_lookup_attached()] == ["dispatch"]


def test_a_binding_by_ingress_interface(netns: Namespace) -> None:
    netns.add_local_route("192.0.2.0/24")
    netns.add_injector("in1", clients=["198.19.0.0/16"])
    on_in1 = netns.tcp_listener("127.0.0.1:8080", "via-in1")
    netns.tcp_listener("0.0.0.0:80", "regular")
    d = sk_lookup(netns)
    d.bind("tcp", "192.0.2.0/24", 80, on_in1, ifindex="in1")
    (b,) = d.bindings()
    assert b.ifindex == netns.link_index("in1") and not b.no_reuseport
    assert f"ifindex {b.ifindex} -> via-in1" in str(b)
    rows = {
        "tcp 198.19.0.1:40000 -> 192.0.2.1:80 dev in1": "via-in1",
        "tcp 198.18.0.1:40000 -> 192.0.2.1:80": "regular",  # came in on the default TUN
    }
    assert netns.probe(rows) == rows


def test_test_run_refusals_say_why(netns: Namespace) -> None:
    """Kernel facts: the test context takes no ingress_ifindex, and a socket in a reuseport
    group can be selected only with F_NO_REUSEPORT."""
    netns.add_local_route("192.0.2.0/24")
    a = netns.tcp_listener("127.0.0.1:8080", "a", reuseport=True)
    d = sk_lookup(netns)
    d.bind("tcp", "192.0.2.0/24", 80, a)
    flow = "tcp 198.18.0.1:1000 -> 192.0.2.1:80"
    with pytest.raises(ConfigError, match="BPF_SK_LOOKUP_F_NO_REUSEPORT"):
        d.test_run(flow)
    d.bind("tcp", "192.0.2.0/24", 80, a, no_reuseport=True)
    assert d.test_run(flow) == ("pass", "a")
    from bindlab.bpf import test_run

    with pytest.raises(ConfigError, match="takes no ingress_ifindex"):
        test_run(netns, d.prog_fd, flow, ifindex=1)


def test_steer_test_run_runs_that_program_alone(netns: Namespace) -> None:
    netns.add_local_route("192.0.2.0/24")
    t = netns.tcp_listener("127.0.0.1:8080", "t")
    u = netns.tcp_listener("127.0.0.1:8081", "u")
    first = Steer(netns, "pass", target=t)
    second = Steer(netns, "pass", target=u)  # no F_REPLACE: EEXIST behind the first
    flow = "tcp 198.18.0.1:1000 -> 192.0.2.1:80"
    assert first.test_run(flow) == ("pass", "t")
    assert second.test_run(flow) == ("pass", "u")  # alone, it selects its own target
    assert list(netns.probe([flow]).values()) == ["t"]  # in the chain, the first one wins
    assert second.ret == -17  # EEXIST: a socket was selected already
