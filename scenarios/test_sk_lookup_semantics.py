"""What the kernel does with sk_lookup verdicts and selections (after the BPF selftest
``prog_tests/sk_lookup.c``), observed with injected flows and ``steer.bpf.c`` programs.

- a redirect goes to a socket on another port or address, and beats an exact-match socket;
- SK_PASS without a selection falls back to the regular lookup; SK_DROP refuses (TCP: RST,
  UDP: ICMP port unreachable), even with a regular socket in place;
- a selected socket in a reuseport group goes through reuseport selection unless
  BPF_SK_LOOKUP_F_NO_REUSEPORT;
- several programs run in attach order, all of them; a selection wins over any drop;
- bpf_sk_assign refuses unsuitable sockets with an errno (and the lookup falls back);
- detaching restores the regular lookup.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct

import pytest
from bindlab import Namespace
from bindlab.bpf import Steer
from bindlab.bpf.libbpf import LibbpfError
from bindlab.flow import endpoint as ep

pytestmark = pytest.mark.requires("BPF_SK_LOOKUP", "CLANG_BPF")

FAMILIES = {
    "ipv4": dict(dst="192.0.2.10", other="192.0.2.20", client="198.18.0.1", lo="127.0.0.1"),
    "ipv6": dict(dst="2001:db8:1::10", other="2001:db8:1::20", client="2001:db8:ffff::1", lo="::1"),
}
CLOSED = {"tcp": "RST", "udp": "ICMP"}
SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>
BPF_RET_K = 0x06  # <linux/filter.h> BPF_RET | BPF_K


@pytest.fixture(params=list(FAMILIES))
def fam(request: pytest.FixtureRequest) -> dict[str, str]:
    return FAMILIES[request.param]


@pytest.fixture
def lab(netns: Namespace) -> Namespace:
    netns.add_local_route("192.0.2.0/24")
    netns.add_local_route("2001:db8:1::/64")
    netns.sysctl("net.ipv6.ip_nonlocal_bind", 1)
    return netns


def sock(ns: Namespace, proto: str, addr: str, label: str, **opts):
    return ns.server(proto, addr, label, **opts)


def flows(proto: str, fam: dict[str, str], n: int, dst: str | None = None, port: int = 80):
    return [
        f"{proto} {ep(fam['client'], 40000 + i)} -> {ep(dst or fam['dst'], port)}" for i in range(n)
    ]


def one(ns: Namespace, proto: str, fam: dict[str, str], port: int = 80) -> str:
    """The verdict of a single flow to the family's destination."""
    [verdict] = ns.probe(flows(proto, fam, 1, port=port)).values()
    return verdict


@pytest.mark.parametrize("where", ["another-port", "another-address", "loopback"], ids=lambda w: w)
def test_redirect_to_socket_elsewhere(lab, fam, proto, where):
    addr = {
        "another-port": ep(fam["dst"], 8008),
        "another-address": ep(fam["other"], 80),
        "loopback": ep(fam["lo"], 8008),
    }[where]
    target = sock(lab, proto, addr, "target")
    s = Steer(lab, "pass", target=target)
    assert one(lab, proto, fam) == "target"
    assert (s.runs, s.ret) == (1, 0)


def test_redirect_beats_exact_match_socket(lab, fam, proto):
    sock(lab, proto, ep(fam["dst"], 80), "exact")
    Steer(lab, "pass", target=sock(lab, proto, ep(fam["lo"], 8008), "target"))
    assert one(lab, proto, fam) == "target"


def test_pass_without_selection_falls_back(lab, fam, proto):
    sock(lab, proto, ep(fam["dst"], 80), "regular")
    s = Steer(lab, "pass")
    c = ep(fam["client"], 40000)
    rows = {
        f"{proto} {c} -> {ep(fam['dst'], 80)}": "regular",
        f"{proto} {c} -> {ep(fam['dst'], 81)}": CLOSED[proto],  # no socket there at all
    }
    assert lab.probe(rows) == rows
    assert s.runs == 2


def test_drop_refuses_even_with_a_regular_socket(lab, fam, proto):
    sock(lab, proto, ep(fam["dst"], 80), "regular")
    s = Steer(lab, "drop")
    assert one(lab, proto, fam) == CLOSED[proto]  # TCP: RST; UDP: ICMP port unreachable
    assert s.runs == 1


def test_selection_with_drop_verdict_is_discarded(lab, fam, proto):
    sock(lab, proto, ep(fam["dst"], 80), "regular")
    s = Steer(lab, "drop", target=sock(lab, proto, ep(fam["lo"], 8008), "target"))
    assert one(lab, proto, fam) == CLOSED[proto]
    assert s.ret == 0  # the assignment succeeded; the verdict dropped it


def reuseport_select(s: socket.socket, index: int) -> None:
    """Attach a classic BPF reuseport program that always picks group member ``index``."""
    insn = ctypes.create_string_buffer(struct.pack("=HBBI", BPF_RET_K, 0, 0, index))
    prog = struct.pack("=HxxxxxxQ", 1, ctypes.addressof(insn))  # struct sock_fprog
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, prog)


@pytest.mark.parametrize(
    ("program", "no_reuseport", "expect"),
    [
        ("hash", False, {"a", "b"}),  # the kernel hashes the 4-tuple over the group
        ("hash", True, {"a"}),
        ("cbpf-picks-b", False, {"b"}),  # the group's reuseport program overrides the pick
        ("cbpf-picks-b", True, {"a"}),
    ],
)
def test_redirect_into_reuseport_group(lab, fam, proto, program, no_reuseport, expect):
    a = sock(lab, proto, ep(fam["lo"], 8008), "a", reuseport=True)
    sock(lab, proto, ep(fam["lo"], 8008), "b", reuseport=True)
    if program == "cbpf-picks-b":
        reuseport_select(a, 1)  # members are indexed in bind order: a=0, b=1
    s = Steer(lab, "pass", target=a, no_reuseport=no_reuseport)
    got = lab.distribution(flows(proto, fam, 48))
    assert set(got) == expect, got
    assert s.ret == 0


# (first program, second program) -> verdict; "redir-a"/"redir-b" assign a/b and pass.
MULTI = [
    ("pass", "pass", "regular"),
    ("pass", "drop", "RST"),
    ("drop", "pass", "RST"),
    ("drop", "drop", "RST"),
    ("pass", "redir-b", "b"),
    ("redir-a", "pass", "a"),
    ("drop", "redir-b", "b"),  # a later selection overrides an earlier drop
    ("redir-a", "drop", "a"),  # and an earlier selection survives a later drop
    ("redir-a", "redir-b", "a"),  # the second assign fails with EEXIST
    ("redir-a", "replace-b", "b"),  # unless it passes BPF_SK_LOOKUP_F_REPLACE
    # A later program cannot clear an earlier selection: a NULL assignment (with REPLACE,
    # returning SK_PASS) is not remembered between programs, so a still wins.
    ("redir-a", "null-replace", "a"),
    ("drop-a", "pass", "RST"),  # assigned but dropped: nothing selected for the next one
]


@pytest.mark.parametrize(
    ("first", "second", "expect"), MULTI, ids=[f"{a},{b}" for a, b, _ in MULTI]
)
def test_multiple_programs(lab, first, second, expect):
    fam = FAMILIES["ipv4"]
    sock(lab, "tcp", ep(fam["dst"], 80), "regular")
    socks = {
        "a": sock(lab, "tcp", "127.0.0.1:8001", "a"),
        "b": sock(lab, "tcp", "127.0.0.1:8002", "b"),
    }

    def make(spec: str) -> Steer:
        kind, _, which = spec.partition("-")
        target = socks.get(which)
        if kind == "redir":
            return Steer(lab, "pass", target=target)
        if kind == "replace":
            return Steer(lab, "pass", target=target, replace=True)
        if kind == "null":
            return Steer(lab, "pass", assign_null=True, replace=True)
        if kind == "drop" and target is not None:
            return Steer(lab, "drop", target=target)
        return Steer(lab, kind)

    p1, p2 = make(first), make(second)
    assert one(lab, "tcp", fam) == expect
    assert (p1.runs, p2.runs) == (1, 1)  # every program runs, whatever came before
    assert p2.preselected == first.startswith("redir")
    if (first, second) == ("redir-a", "redir-b"):
        assert p2.ret == -errno.EEXIST


def test_ipv4_flow_to_dual_stack_socket(lab):
    fam = FAMILIES["ipv4"]
    s = Steer(lab, "pass", target=lab.tcp_listener("[::]:8008", label="dual", v6only=False))
    assert one(lab, "tcp", fam) == "dual"
    assert s.ret == 0


@pytest.mark.parametrize(
    ("case", "err"),
    [
        ("v6only-socket-ipv4-flow", errno.EAFNOSUPPORT),
        ("ipv4-socket-ipv6-flow", errno.EAFNOSUPPORT),
        ("udp-socket-tcp-flow", errno.EPROTOTYPE),
        ("connected-udp", errno.ESOCKTNOSUPPORT),
        ("established-tcp", errno.ESOCKTNOSUPPORT),
    ],
)
def test_unsuitable_socket_is_refused_and_lookup_falls_back(lab, case, err):
    """bpf_sk_assign returns -errno; the program passes; the regular socket gets the flow."""
    fam = FAMILIES["ipv6" if case == "ipv4-socket-ipv6-flow" else "ipv4"]
    proto = "udp" if case == "connected-udp" else "tcp"
    sock(lab, proto, ep(fam["dst"], 80), "regular")
    if case == "v6only-socket-ipv4-flow":
        target = lab.tcp_listener("[::]:8008", label="t", v6only=True)
    elif case == "ipv4-socket-ipv6-flow":
        target = lab.tcp_listener("127.0.0.1:8008", label="t")
    elif case == "udp-socket-tcp-flow":
        target = lab.udp_socket("127.0.0.1:8008", label="t")
    elif case == "connected-udp":
        target = lab.udp_socket("127.0.0.1:8008", label="t", connect="127.0.0.1:9")
    else:
        listener = lab.tcp_listener("127.0.0.1:7000", label="l")
        client = lab.socket("tcp", 4)
        with lab.enter():
            client.connect(("127.0.0.1", 7000))
        target, _ = listener.accept()
        lab.defer(target.close)
    s = Steer(lab, "pass", target=target)
    assert one(lab, proto, fam) == "regular"
    assert s.ret == -err


@pytest.mark.parametrize(
    ("case", "err"),
    [("unbound-udp", errno.EOPNOTSUPP), ("bound-tcp-not-listening", errno.EOPNOTSUPP)],
)
def test_sockmap_refuses_sockets_that_cannot_receive(lab, case, err):
    s = lab.socket("udp" if case == "unbound-udp" else "tcp", 4)
    if case != "unbound-udp":
        s.bind(("127.0.0.1", 7000))
    with pytest.raises(LibbpfError) as e:
        Steer(lab, "pass", target=s)
    assert e.value.errno == err


def test_connected_udp_socket_beats_sk_lookup(lab):
    """UDP looks up a socket connected to the exact 4-tuple before running sk_lookup."""
    fam = FAMILIES["ipv4"]
    lab.udp_socket(ep(fam["dst"], 80), label="connected", connect=ep(fam["client"], 40000))
    s = Steer(lab, "drop")
    assert one(lab, "udp", fam) == "connected"
    assert s.runs == 0


def test_closed_target_leaves_the_sockmap(lab, fam, proto):
    sock(lab, proto, ep(fam["dst"], 80), "regular")
    target = sock(lab, proto, ep(fam["lo"], 8008), "target")
    s = Steer(lab, "pass", target=target)
    target.close()
    assert one(lab, proto, fam) == "regular"
    assert s.ret == -errno.ENOENT  # steer.bpf.c's code for "no socket in the map"


def test_detach_restores_regular_lookup(lab, fam, proto):
    sock(lab, proto, ep(fam["dst"], 80), "regular")
    s = Steer(lab, "drop")
    assert one(lab, proto, fam) == CLOSED[proto]
    s.detach()
    assert lab.distribution(flows(proto, fam, 3)) == {"regular": 3}
    assert s.runs == 1
