"""sk_reuseport programs (eBPF and classic BPF) and their interplay with sk_lookup, asserted
by injected flows (issue 13, item 2). Each runs as IPv4, IPv6 and IPv4-mapped (the
``family`` fixture); addresses are written once."""

from __future__ import annotations

import pytest
from bindlab import ConfigError, Namespace
from bindlab.bpf import ReuseportProgram, Steer, cbpf_index, sk_lookup
from bindlab.families import Family

pytestmark = pytest.mark.requires("CLANG_BPF", "SO_REUSEPORT")

ADDR = {"tcp": "192.0.2.1:80", "udp": "192.0.2.1:53"}


def flows(fam: Family, proto: str, n: int = 24) -> list[str]:
    dst = ADDR[proto]
    return [
        fam.flow(f"{proto} 198.18.{i // 200}.{i % 200 + 1}:{40000 + i} -> {dst}") for i in range(n)
    ]


def group(ns: Namespace, fam: Family, proto: str, n: int = 3) -> list:
    ns.add_local_route(fam.prefix("192.0.2.0/24"))
    if fam.name == "ipv6":
        ns.sysctl("net.ipv6.ip_nonlocal_bind", 1)
    return [ns.server(proto, fam.endpoint(ADDR[proto]), f"m{i}", reuseport=True) for i in range(n)]


def verdicts(ns: Namespace, fam: Family, proto: str, n: int = 24) -> set[str]:
    return set(ns.probe(flows(fam, proto, n)).values())


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_the_program_selects_by_index(netns: Namespace, family: Family, proto: str) -> None:
    socks = group(netns, family, proto)
    prog = ReuseportProgram(netns).attach(socks[0])
    for i, s in enumerate(socks):
        prog.place(i, s)
    for i in (2, 0, 1):
        prog.select(i)
        assert verdicts(netns, family, proto) == {f"m{i}"}
    assert prog.runs >= 3 * 24 and prog.ret == 0


@pytest.mark.parametrize(("proto", "refused"), [("tcp", "RST"), ("udp", "ICMP")])
def test_sk_drop_refuses_as_if_nobody_listened(
    netns: Namespace, family: Family, proto: str, refused: str
) -> None:
    socks = group(netns, family, proto)
    prog = ReuseportProgram(netns).attach(socks[0])
    prog.drop()
    assert verdicts(netns, family, proto) == {refused}


def test_an_empty_index_drops_or_falls_back_to_the_hash(netns: Namespace, family: Family) -> None:
    socks = group(netns, family, "tcp")
    prog = ReuseportProgram(netns).attach(socks[0]).place(0, socks[0])
    prog.select(5)  # nothing placed there
    assert verdicts(netns, family, "tcp") == {"RST"}
    assert prog.ret == -2  # ENOENT
    prog.select(5, on_error="fallback")
    assert len(verdicts(netns, family, "tcp", 48)) > 1  # the hash spreads the flows again


def test_sk_pass_without_a_choice_is_the_hash(netns: Namespace, family: Family) -> None:
    socks = group(netns, family, "tcp")
    prog = ReuseportProgram(netns).attach(socks[0])
    prog.fallback()
    assert len(verdicts(netns, family, "tcp", 48)) > 1
    assert prog.runs >= 48


def test_by_hash_uses_the_placed_sockets_only(netns: Namespace, family: Family) -> None:
    socks = group(netns, family, "tcp", 4)
    prog = ReuseportProgram(netns).attach(socks[0]).place(0, socks[2]).place(1, socks[3])
    prog.by_hash(2)
    assert verdicts(netns, family, "tcp", 48) == {"m2", "m3"}


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_classic_bpf_returns_an_index_in_join_order(
    netns: Namespace, family: Family, proto: str
) -> None:
    socks = group(netns, family, proto)
    netns.set_option(socks[0], "reuseport_cbpf", cbpf_index(2))
    assert verdicts(netns, family, proto) == {"m2"}
    netns.set_option(socks[0], "reuseport_cbpf", cbpf_index(7))  # out of range: the hash
    assert len(verdicts(netns, family, proto, 48)) > 1


def test_sk_lookup_assignment_goes_through_reuseport_unless_no_reuseport(
    netns: Namespace, family: Family
) -> None:
    """sk_lookup picks m0; the group's program then picks m1, unless the binding says
    BPF_SK_LOOKUP_F_NO_REUSEPORT. (A socket in a SOCKMAP cannot also sit in a
    REUSEPORT_SOCKARRAY: EBUSY, both keep their state in sk_user_data; so m0 is not placed.)"""
    socks = group(netns, family, "tcp")
    prog = ReuseportProgram(netns).attach(socks[0]).place(1, socks[1]).place(2, socks[2])
    prog.select(1)
    d = sk_lookup(netns)
    d.bind("tcp", family.prefix("192.0.2.0/24"), 80, socks[0])
    assert verdicts(netns, family, "tcp") == {"m1"}
    d.bind("tcp", family.prefix("192.0.2.0/24"), 80, socks[0], no_reuseport=True)
    assert verdicts(netns, family, "tcp") == {"m0"}
    prog.drop()  # the group's program would drop: no_reuseport skips it altogether
    assert verdicts(netns, family, "tcp") == {"m0"}
    d.bind("tcp", family.prefix("192.0.2.0/24"), 80, socks[0])
    assert verdicts(netns, family, "tcp") == {"RST"}


def test_steer_no_reuseport_matches_the_dispatcher(netns: Namespace, family: Family) -> None:
    socks = group(netns, family, "tcp")
    netns.set_option(socks[0], "reuseport_cbpf", cbpf_index(2))
    Steer(netns, "pass", target=socks[0], no_reuseport=True)
    assert verdicts(netns, family, "tcp") == {"m0"}


def test_bad_arguments_name_the_culprit(netns: Namespace) -> None:
    prog = ReuseportProgram(netns, size=4)
    with pytest.raises(ConfigError, match="index 4 is not in 0-3"):
        prog.select(4)
    with pytest.raises(ConfigError, match="on_error 'keep'"):
        prog.select(0, on_error="keep")
    s = netns.socket()  # not in a reuseport group
    with pytest.raises(ConfigError, match="must be bound with SO_REUSEPORT"):
        prog.place(0, s)
