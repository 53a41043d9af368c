"""The inet_lookup RFC's use cases (BPF sk_lookup, Linux 5.9) on the prefix dispatcher.

RFCv2 (Sitnicki, 2019): 1) two HTTP servers share port 80, 192.0.2.0/24 goes to one and
198.51.100.0/24 to the other; 2) a proxy receives an IP range on every port. Plus the
dispatcher's own contract: tubular's precedence (longer prefix wins, then a specific port
beats any port), bindings changed under traffic, counters, a closed socket drops.

Family-neutral tests run as ipv4, ipv6 and ipv4-mapped (IPv4 flows, dual-stack IPv6
servers), over TCP and UDP.
"""

from __future__ import annotations

import ipaddress
import random
import threading

import pytest
from bindlab import Namespace
from bindlab.bpf import sk_lookup
from bindlab.bpf.keys import Rule, select
from bindlab.flow import endpoint as ep

pytestmark = pytest.mark.requires("BPF_SK_LOOKUP", "CLANG_BPF")

FAMILIES = {
    "ipv4": dict(net1="192.0.2.0/24", net2="198.51.100.0/24", client="198.18.0.1", srv="127.0.0.1"),
    "ipv6": dict(
        net1="2001:db8:1::/64", net2="2001:db8:2::/64", client="2001:db8:ffff::1", srv="::1"
    ),
    # IPv4 flows to dual-stack IPv6 sockets (IPV6_V6ONLY off).
    "ipv4-mapped": dict(net1="192.0.2.0/24", net2="198.51.100.0/24", client="198.18.0.1", srv="::"),
}
CLOSED = {"tcp": "RST", "udp": "ICMP"}  # no socket at all


def host(prefix: str, n: int) -> str:
    return str(ipaddress.ip_network(prefix)[n])


@pytest.fixture(params=list(FAMILIES))
def fam(request: pytest.FixtureRequest) -> dict[str, str]:
    return FAMILIES[request.param]


@pytest.fixture
def lab(netns: Namespace, fam: dict[str, str]) -> Namespace:
    netns.add_local_route(fam["net1"])
    netns.add_local_route(fam["net2"])
    # IPv6 bind() to an address only covered by a local route needs non-local bind.
    netns.sysctl("net.ipv6.ip_nonlocal_bind", 1)
    return netns


def server(ns: Namespace, proto: str, fam: dict[str, str], port: int, label: str):
    """A labelled server on a loopback (or, ipv4-mapped, dual-stack) address, port ``port``."""
    return ns.server(proto, ep(fam["srv"], port), label)


def flow(proto: str, fam: dict[str, str], sport: int, dst: str, dport: int) -> str:
    return f"{proto} {ep(fam['client'], sport)} -> {ep(dst, dport)}"


def test_two_servers_share_port_80(lab, fam, proto):
    nginx = server(lab, proto, fam, 8080, "nginx")
    apache = server(lab, proto, fam, 8081, "apache")
    d = sk_lookup(lab)
    d.bind(proto, fam["net1"], 80, nginx)
    d.bind(proto, fam["net2"], 80, apache)
    rows = {
        flow(proto, fam, 40000, host(fam["net1"], 7), 80): "nginx",
        flow(proto, fam, 40001, host(fam["net1"], 200), 80): "nginx",
        flow(proto, fam, 40002, host(fam["net2"], 7), 80): "apache",
        flow(proto, fam, 40003, host(fam["net2"], 1), 80): "apache",
        # Port 81 has no binding and no socket: the regular lookup finds nothing.
        flow(proto, fam, 40004, host(fam["net1"], 7), 81): CLOSED[proto],
    }
    assert lab.probe(rows) == rows


def test_proxy_receives_every_port_of_a_range(lab, fam, proto):
    proxy = server(lab, proto, fam, 9000, "proxy")
    d = sk_lookup(lab)
    d.bind(proto, fam["net1"], None, proxy)
    rows = {flow(proto, fam, 40000 + p, host(fam["net1"], 9), p): "proxy" for p in (1, 22, 80, 443)}
    rows[flow(proto, fam, 41000, host(fam["net1"], 9), 65535)] = "proxy"
    rows[flow(proto, fam, 41001, host(fam["net2"], 9), 80)] = CLOSED[proto]  # outside the range
    assert lab.probe(rows) == rows


def test_binding_is_per_protocol(lab, fam):
    tcp = server(lab, "tcp", fam, 8080, "tcp-proxy")
    sk_lookup(lab).bind("tcp", fam["net1"], None, tcp)
    dst = host(fam["net1"], 9)
    rows = {flow("tcp", fam, 40000, dst, 53): "tcp-proxy", flow("udp", fam, 40000, dst, 53): "ICMP"}
    assert lab.probe(rows) == rows


PRECEDENCE = {
    "ipv4": (
        [
            ("192.0.2.0/24", 0, "range"),
            ("192.0.2.0/24", 80, "web"),
            ("192.0.2.128/25", 0, "half"),
            ("192.0.2.200/32", 80, "host"),
            ("192.0.2.192/26", 443, "tls"),
            ("192.0.2.192/26", 0, "quarter"),
        ],
        [
            ("192.0.2.1", 80, "web"),  # same /24: the specific port beats any port
            ("192.0.2.1", 81, "range"),
            ("192.0.2.129", 80, "half"),  # a longer prefix beats a specific port
            ("192.0.2.200", 80, "host"),
            ("192.0.2.200", 81, "quarter"),  # /26 any port beats /25 any port
            ("192.0.2.201", 443, "tls"),  # equal /26: the port wins
            ("192.0.2.201", 444, "quarter"),
        ],
    ),
    "ipv6": (
        [
            ("2001:db8:1::/64", 0, "range"),
            ("2001:db8:1::/64", 80, "web"),
            ("2001:db8:1::8000:0:0:0/65", 0, "half"),
            ("2001:db8:1::8000:0:0:c8/128", 80, "host"),
            ("2001:db8:1::c000:0:0:0/66", 443, "tls"),
            ("2001:db8:1::c000:0:0:0/66", 0, "quarter"),
        ],
        [
            ("2001:db8:1::1", 80, "web"),
            ("2001:db8:1::1", 81, "range"),
            ("2001:db8:1::8000:0:0:1", 80, "half"),
            ("2001:db8:1::8000:0:0:c8", 80, "host"),
            ("2001:db8:1::c000:0:0:c8", 81, "quarter"),
            ("2001:db8:1::c000:0:0:c9", 443, "tls"),
            ("2001:db8:1::c000:0:0:c9", 444, "quarter"),
        ],
    ),
}


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_binding_precedence(netns, family):
    fam = FAMILIES[family]
    bindings, table = PRECEDENCE[family]
    netns.add_local_route(fam["net1"])
    d = sk_lookup(netns)
    for i, (prefix, port, label) in enumerate(bindings):
        d.bind("tcp", prefix, port, server(netns, "tcp", fam, 8000 + i, label))
    rows = {flow("tcp", fam, 40000 + i, dst, port): lbl for i, (dst, port, lbl) in enumerate(table)}
    assert netns.probe(rows) == rows


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_dispatch_matches_reference_model(netns, family):
    """60 random bindings (prefix lengths /26../32 or /122../128, four ports or any) against
    120 random flows: the program picks what :func:`bindlab.bpf.keys.select` picks."""
    fam = FAMILIES[family]
    base = ipaddress.ip_network("192.0.2.0/24" if family == "ipv4" else "2001:db8:1::/120")
    netns.add_local_route(str(base))
    rnd = random.Random(4)
    d = sk_lookup(netns)
    rules: dict[Rule, str] = {}
    while len(rules) < 60:
        plen = rnd.randint(base.prefixlen + 2, base.max_prefixlen)
        net = ipaddress.ip_network((base[rnd.randrange(256)], plen), strict=False)
        rule = Rule("tcp", net, rnd.choice([0, 80, 443, 53, 8080]))
        if rule not in rules:
            rules[rule] = f"r{len(rules)}"
            d.bind(
                "tcp",
                rule.prefix,
                rule.port,
                server(netns, "tcp", fam, 20000 + len(rules), rules[rule]),
            )
    rows = {}
    for i in range(120):
        dst, port = base[rnd.randrange(256)], rnd.choice([80, 443, 53, 8080, 9])
        want = select(rules, "tcp", dst, port)
        rows[flow("tcp", fam, 40000 + i, str(dst), port)] = rules[want] if want else "RST"
    assert "RST" in rows.values() and len(set(rows.values())) > 20  # a table worth checking
    assert netns.probe(rows) == rows


def test_unbind_falls_back_to_regular_lookup_and_counts(lab, fam, proto):
    dst = host(fam["net1"], 10)
    lab.server(proto, ep(dst, 80), "regular")
    nginx = server(lab, proto, fam, 8080, "nginx")
    d = sk_lookup(lab)
    d.bind(proto, fam["net1"], 80, nginx)
    flows = [flow(proto, fam, 40000 + i, dst, 80) for i in range(5)]
    assert lab.distribution(flows) == {"nginx": 5}
    assert d.lookups(proto, fam["net1"], 80) == 5  # one lookup per SYN / datagram
    [b] = d.bindings()
    assert (b.rule, b.labels, b.lookups, b.open) == (
        Rule.make(proto, fam["net1"], 80),
        ("nginx",),
        5,
        True,
    )
    d.unbind(proto, fam["net1"], 80)
    assert d.bindings() == []
    assert lab.distribution([flow(proto, fam, 41000 + i, dst, 80) for i in range(5)]) == {
        "regular": 5
    }
    assert d.stats() == {"no_match": 5, "match": 5, "drop_no_socket": 0, "drop_assign": 0}


def test_replace_binding_while_traffic_flows(netns):
    """A binding flipped between two sockets hundreds of times during a probe: every flow
    lands on one of them, none falls through (the regular listener) or is dropped."""
    netns.add_local_route("192.0.2.0/24")
    netns.tcp_listener("192.0.2.10:80", label="regular")
    a = netns.tcp_listener("127.0.0.1:8080", label="a")
    b = netns.tcp_listener("127.0.0.1:8081", label="b")
    d = sk_lookup(netns)
    d.bind("tcp", "192.0.2.0/24", 80, a)
    stop, flips = threading.Event(), [0]

    def flip() -> None:
        while not stop.is_set():
            d.bind("tcp", "192.0.2.0/24", 80, (a, b)[flips[0] % 2])
            flips[0] += 1

    t = threading.Thread(target=flip)
    t.start()
    try:
        got = netns.distribution(
            [f"tcp 198.18.{i // 200}.{i % 200 + 1}:4000 -> 192.0.2.10:80" for i in range(400)]
        )
    finally:
        stop.set()
        t.join()
    assert flips[0] > 10
    assert set(got) <= {"a", "b"}, got
    assert sum(got.values()) == 400


def test_closed_socket_drops_rather_than_falling_through(lab, fam, proto):
    dst = host(fam["net1"], 10)
    lab.server(proto, ep(dst, 80), "regular")
    nginx = server(lab, proto, fam, 8080, "nginx")
    d = sk_lookup(lab)
    d.bind(proto, fam["net1"], 80, nginx)
    nginx.close()  # the kernel takes it out of the SOCKMAP
    assert lab.probe([flow(proto, fam, 40000, dst, 80)]) == {
        flow(proto, fam, 40000, dst, 80): CLOSED[proto]
    }
    [b] = d.bindings()
    assert not b.open
    assert d.stats()["drop_no_socket"] == 1


def test_fallback_socket_takes_over_when_the_first_closes(lab, fam, proto):
    first = server(lab, proto, fam, 8080, "first")
    second = server(lab, proto, fam, 8081, "second")
    d = sk_lookup(lab)
    d.bind(proto, fam["net1"], 80, first, second)
    dst = host(fam["net1"], 10)
    assert lab.distribution([flow(proto, fam, 40000 + i, dst, 80) for i in range(4)]) == {
        "first": 4
    }
    first.close()
    assert lab.distribution([flow(proto, fam, 41000 + i, dst, 80) for i in range(4)]) == {
        "second": 4
    }


def test_detach_restores_regular_lookup_and_attach_resumes(lab, fam, proto):
    dst = host(fam["net1"], 10)
    lab.server(proto, ep(dst, 80), "regular")
    d = sk_lookup(lab)
    d.bind(proto, fam["net1"], 80, server(lab, proto, fam, 8080, "nginx"))
    f = [flow(proto, fam, 40000 + i, dst, 80) for i in range(3)]
    assert lab.distribution(f) == {"nginx": 3}
    d.detach()
    assert lab.distribution(f) == {"regular": 3}
    d.attach()
    assert lab.distribution(f) == {"nginx": 3}
    d.close()
    assert lab.distribution(f) == {"regular": 3}
