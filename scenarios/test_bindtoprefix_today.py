"""SO_BINDTOPREFIX (2016 RFC, never merged): its problem on today's kernel, and the
alternatives the RFC names.

Claim (the RFC): "SO_BINDTOPREFIX: an alternative to binding to INADDR_ANY that allows
applications bound to disjoint network prefixes to share a port."

Check: the RFC's setup, local routes 192.0.2.0/24 and 198.51.100.0/24 with server A wanting
port 80 on the first and server B on the second. Verdicts show that bind() cannot say it
(a wildcard takes both prefixes, an address takes one address); that one listener per
address does, at a cost in sockets, time and memory that is printed (never asserted); that
TPROXY (nftables) steers each prefix to its server; VRF is checked where CONFIG_NET_VRF
exists. The sk_lookup alternative lives in test_sk_lookup_* / test_bindtoprefix_emulation*.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import resource
import time
from collections.abc import Iterator

import pytest
from bindlab import Namespace
from bindlab.flow import endpoint

PREFIX_A, PREFIX_B = "192.0.2.0/24", "198.51.100.0/24"
OTHER = "203.0.113.0/24"  # a third local prefix nobody asked for
CLIENT = "198.18.0.1"


def tcp(dst: str, port: int = 80, sport: int = 1000) -> str:
    return f"tcp {CLIENT}:{sport} -> {dst}:{port}"


@pytest.fixture
def ns(netns: Namespace) -> Namespace:
    for prefix in (PREFIX_A, PREFIX_B, OTHER):
        netns.add_local_route(prefix)
    return netns


def test_wildcard_takes_both_prefixes(ns: Namespace) -> None:
    ns.tcp_listener("0.0.0.0:80", label="A")
    rows = {
        tcp("192.0.2.7"): "A",
        tcp("198.51.100.7"): "A",  # B's prefix: A takes it too
        tcp("203.0.113.7"): "A",  # and every other local address
    }
    assert ns.probe(rows) == rows
    with pytest.raises(OSError) as e:  # B cannot have the same wildcard ...
        ns.tcp_listener("0.0.0.0:80", label="B")
    assert e.value.errno == errno.EADDRINUSE


def test_two_reuseport_wildcards_split_flows_regardless_of_prefix(ns: Namespace) -> None:
    """... and with SO_REUSEPORT it shares A's group: each prefix's flows go to both."""
    ns.tcp_listener("0.0.0.0:80", label="A", reuseport=True)
    ns.tcp_listener("0.0.0.0:80", label="B", reuseport=True)
    for dst in ("192.0.2.7", "198.51.100.7"):
        got = ns.distribution([tcp(dst, sport=1024 + i) for i in range(200)])
        assert set(got) == {"A", "B"}, f"flows to {dst}: {got}"


def test_specific_address_takes_one_address_not_a_prefix(ns: Namespace) -> None:
    ns.tcp_listener("192.0.2.1:80", label="A")
    ns.tcp_listener("198.51.100.1:80", label="B")
    rows = {
        tcp("192.0.2.1"): "A",
        tcp("192.0.2.2"): "RST",  # the rest of A's prefix: nobody
        tcp("198.51.100.1"): "B",
        tcp("198.51.100.254"): "RST",
    }
    assert ns.probe(rows) == rows


@pytest.fixture
def nofile() -> Iterator[None]:
    """Soft RLIMIT_NOFILE raised to the hard limit for the test (restored after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def meminfo() -> dict[str, int]:
    with open("/proc/meminfo") as f:
        return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":") for line in f)}


def rss() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        return next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmRSS:"))


def sample(net: ipaddress.IPv4Network, n: int) -> list[str]:
    """``n`` addresses spread over ``net``, its first and last included."""
    size = net.num_addresses
    return [str(net[round(i * (size - 1) / (n - 1))]) for i in range(n)]


# Two disjoint prefixes per size: the RFC's /24s, and /20s (4096 addresses each).
SIZES = {"24": ("192.0.2.0/24", "198.51.100.0/24"), "20": ("10.1.0.0/20", "10.2.0.0/20")}


@pytest.mark.parametrize("size", SIZES, ids=[f"per-address-/{s}" for s in SIZES])
def test_per_address_listeners_cover_a_prefix_at_a_cost(
    netns: Namespace, nofile: None, size: str, capsys: pytest.CaptureFixture[str]
) -> None:
    nets = [ipaddress.IPv4Network(p) for p in SIZES[size]]
    for net in nets:
        netns.add_local_route(str(net))
    netns.add_local_route(OTHER)
    netns.injector  # noqa: B018 - set up injection before measuring
    mem0, rss0, t0 = meminfo(), rss(), time.perf_counter()
    for net, label in zip(nets, "AB", strict=True):
        for addr in net:
            netns.tcp_listener(f"{addr}:80", label=f"{label}-{addr}")  # one label each
    seconds = time.perf_counter() - t0
    mem1, rss1 = meminfo(), rss()
    sockets = sum(n.num_addresses for n in nets)
    with capsys.disabled():
        print(
            f"\n# per-address listeners for two /{size}: {sockets:,} sockets (a wildcard: 1), "
            f"{seconds * 1000:.0f} ms to create ({seconds / sockets * 1e6:.0f} us each), "
            f"MemAvailable drop {(mem0['MemAvailable'] - mem1['MemAvailable']) / 2**20:.1f} MiB, "
            f"Slab +{(mem1['Slab'] - mem0['Slab']) / 2**20:.1f} MiB "
            f"({(mem1['Slab'] - mem0['Slab']) / sockets / 1024:.1f} KiB/socket), "
            f"process RSS +{(rss1 - rss0) / 2**20:.1f} MiB"
        )
    rows = {tcp(a, sport=1000 + i): f"A-{a}" for i, a in enumerate(sample(nets[0], 64))}
    rows |= {tcp(a, sport=2000 + i): f"B-{a}" for i, a in enumerate(sample(nets[1], 64))}
    rows[tcp("203.0.113.7")] = "RST"  # outside both prefixes: nobody
    assert netns.probe(rows) == rows


# -- TPROXY: nftables steers each prefix's port 80 to its server's transparent listener ----

TPROXY_RULESET = """
table inet bindlab_tproxy {
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    ip daddr 192.0.2.0/24 meta l4proto { tcp, udp } th dport 80 tproxy ip to :8001 meta mark set 1 accept
    ip daddr 198.51.100.0/24 meta l4proto { tcp, udp } th dport 80 tproxy ip to :8002 meta mark set 1 accept
    ip6 daddr 2001:db8:a::/64 meta l4proto { tcp, udp } th dport 80 tproxy ip6 to :8001 meta mark set 1 accept
    ip6 daddr 2001:db8:b::/64 meta l4proto { tcp, udp } th dport 80 tproxy ip6 to :8002 meta mark set 1 accept
  }
}
"""
TPROXY_FAMILIES = {
    4: dict(
        any="0.0.0.0", client="198.18.0.1", a="192.0.2.7", b="198.51.100.7", other="203.0.113.7"
    ),
    6: dict(
        any="::",
        client="2001:db8:ffff::1",
        a="2001:db8:a::7",
        b="2001:db8:b::7",
        other="2001:db8:c::7",
    ),
}


def ep(v: int, ip: str, port: int) -> str:
    return endpoint(ip, port)


def load_tproxy(ns: Namespace) -> None:
    """Load the ruleset (tests using it require NFT_TPROXY, so a refusal is a failure)."""
    ns.run(["nft", "-f", "-"], input=TPROXY_RULESET)


def tproxy_servers(ns: Namespace, v: int) -> None:
    """A and B: transparent TCP listeners and UDP sockets on :8001 and :8002."""
    w = TPROXY_FAMILIES[v]["any"]
    six = v == 6  # v6only: leave IPv4 to nobody
    for label, port in (("A", 8001), ("B", 8002)):
        ns.tcp_listener(ep(v, w, port), label=label, transparent=True, v6only=six)
        ns.udp_socket(ep(v, w, port), label=f"{label}-udp", transparent=True, v6only=six)


def tproxy_rows(v: int, sport: int) -> dict[str, str]:
    f = TPROXY_FAMILIES[v]
    c = ep(v, f["client"], sport)
    return {
        f"tcp {c} -> {ep(v, f['a'], 80)}": "A",
        f"tcp {c} -> {ep(v, f['b'], 80)}": "B",
        f"udp {c} -> {ep(v, f['a'], 80)}": "A-udp",
        f"udp {c} -> {ep(v, f['b'], 80)}": "B-udp",
    }


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def v(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.mark.requires("IP_TRANSPARENT", "NFT_TPROXY")
def test_tproxy_steers_each_prefix_to_its_server(netns: Namespace, v: int) -> None:
    """With the prefixes local (the RFC's setup), the tproxy rule alone does it."""
    for prefix in (
        PREFIX_A,
        PREFIX_B,
        OTHER,
        "2001:db8:a::/64",
        "2001:db8:b::/64",
        "2001:db8:c::/64",
    ):
        netns.add_local_route(prefix)
    load_tproxy(netns)
    tproxy_servers(netns, v)
    f = TPROXY_FAMILIES[v]
    rows = tproxy_rows(v, 1000)
    rows[f"tcp {ep(v, f['client'], 1000)} -> {ep(v, f['other'], 80)}"] = "RST"  # no rule
    assert netns.probe(rows) == rows


@pytest.mark.requires("IP_TRANSPARENT", "NFT_TPROXY")
def test_tproxy_ignores_a_listener_without_ip_transparent(ns: Namespace) -> None:
    load_tproxy(ns)
    ns.tcp_listener("0.0.0.0:8001", label="A")  # not transparent: tproxy does not pick it
    rows = {tcp("192.0.2.7"): "RST", tcp("192.0.2.7", port=8001): "A"}
    assert ns.probe(rows) == rows


@pytest.mark.requires("IP_TRANSPARENT", "NFT_TPROXY")
def test_tproxy_without_local_routes_needs_the_policy_route(netns: Namespace, v: int) -> None:
    """Prefixes that are not local are dropped (forwarding is off) until marked packets
    are routed locally: ``ip rule add fwmark 1 lookup 100`` + ``local default dev lo``."""
    load_tproxy(netns)
    tproxy_servers(netns, v)
    before = tproxy_rows(v, 1000)
    assert netns.probe(before) == dict.fromkeys(before, "NONE")
    netns.run(["ip", f"-{v}", "rule", "add", "fwmark", "1", "lookup", "100"])
    netns.run(["ip", f"-{v}", "route", "add", "local", "default", "dev", "lo", "table", "100"])
    rows = tproxy_rows(v, 1001)
    assert netns.probe(rows) == rows


# -- VRF: each prefix in its own VRF; servers bind to the VRF device -------------------------


@pytest.mark.requires("LINK_VRF")
def test_vrf_per_prefix_with_one_ingress_link_each(netns: Namespace) -> None:
    """VRF separates by ingress link, not by destination prefix: each prefix must arrive on
    a link enslaved to its own VRF; A and B both bind 0.0.0.0:80, each to its VRF.

    A local prefix in a VRF table receives, but cannot answer: every reply (SYN-ACK, RST)
    is routed with the flow's destination as source, and ip_route_output_key_hash_rcu()
    only accepts a source that __ip_dev_find() knows (an interface address, or a local
    route in table ``local``; VRF tables are not looked at) unless the socket is
    IP_TRANSPARENT, which a RST for a closed port has no socket for. Without the prefix in
    table ``local`` every verdict is NONE (IpOutNoRoutes). With it there, ``local`` must be
    looked up after the l3mdev rule (the kernel adds that rule, pref 1000, with the first
    VRF) and each VRF table must end in ``unreachable default``, or a prefix would be local
    on every link (docs/networking/vrf.rst)."""
    ipr = netns.ipr
    netns.run(["ip", "rule", "add", "pref", "32765", "table", "local"])
    netns.run(["ip", "rule", "del", "pref", "0"])
    for name, table, link, clients, prefix in (
        ("vrf-a", 10, "in1", "198.19.1.0/24", PREFIX_A),
        ("vrf-b", 20, "in2", "198.19.2.0/24", PREFIX_B),
    ):
        ipr.link("add", ifname=name, kind="vrf", vrf_table=table)
        vrf = netns.link_index(name)
        ipr.link("set", index=vrf, state="up")
        inj = netns.add_injector(link)
        ipr.link("set", index=inj.index, master=vrf)
        t = str(table)
        netns.run(["ip", "route", "add", clients, "dev", link, "table", t])
        netns.run(["ip", "route", "add", "local", prefix, "dev", name, "table", t])
        netns.run(
            ["ip", "route", "add", "unreachable", "default", "metric", "4278198272", "table", t]
        )
        netns.add_local_route(prefix, dev=name)  # table local: the replies' source is local
    netns.tcp_listener("0.0.0.0:80", label="A", bindtodevice="vrf-a")
    netns.tcp_listener("0.0.0.0:80", label="B", bindtodevice="vrf-b")
    netns.tcp_listener("0.0.0.0:82", label="C")  # bound to no device
    netns.sysctl("net.ipv4.tcp_l3mdev_accept", 0)  # the default
    rows = {
        "tcp 198.19.1.1:1000 -> 192.0.2.7:80 dev in1": "A",
        "tcp 198.19.2.1:1000 -> 198.51.100.7:80 dev in2": "B",
        "tcp 198.19.1.1:1001 -> 192.0.2.7:81 dev in1": "RST",
        "tcp 198.19.1.1:1002 -> 198.51.100.7:80 dev in1": "NONE",  # B's prefix on A's link
        "tcp 198.19.1.1:1003 -> 192.0.2.7:82 dev in1": "RST",  # C sees no VRF's flows ...
    }
    assert netns.probe(rows) == rows
    netns.sysctl("net.ipv4.tcp_l3mdev_accept", 1)  # ... until tcp_l3mdev_accept=1
    rows = {
        "tcp 198.19.1.1:1004 -> 192.0.2.7:82 dev in1": "C",
        "tcp 198.19.2.1:1004 -> 198.51.100.7:82 dev in2": "C",
        "tcp 198.19.1.1:1005 -> 192.0.2.7:80 dev in1": "A",  # bound sockets still win
    }
    assert netns.probe(rows) == rows
