"""The dispatcher's own contract: refusals name the culprit, maps mirror the bindings,
one dispatcher per namespace, and nothing (fds, links) outlives close()."""

from __future__ import annotations

import errno
import gc
import os
import weakref

import pytest
from bindlab import ConfigError, HarnessError, Namespace
from bindlab.bpf import Dispatcher, sk_lookup
from bindlab.bpf.libbpf import BpfObject, LibbpfError

pytestmark = pytest.mark.requires("BPF_SK_LOOKUP", "CLANG_BPF")


@pytest.fixture
def d(netns: Namespace) -> Dispatcher:
    return sk_lookup(netns, max_bindings=8, max_sockets=4)


def test_refuses_sockets_that_cannot_take_flows(netns, d) -> None:
    unlistened = netns.label(netns.socket("tcp", 4), "idle")
    unlistened.bind(("127.0.0.1", 0))
    udp = netns.udp_socket("127.0.0.1:0", label="dns")
    connected = netns.udp_socket("127.0.0.1:0", label="conn", connect="127.0.0.1:9")
    v4 = netns.tcp_listener("127.0.0.1:0", label="web4")
    cases = [
        (("tcp", "192.0.2.0/24", 80, unlistened), "TCP socket idle is not listening"),
        (("tcp", "192.0.2.0/24", 80, udp), "socket dns is not a tcp socket"),
        (("udp", "192.0.2.0/24", 53, connected), "UDP socket conn is connected"),
        (("tcp", "2001:db8::/64", 80, v4), "IPv4 socket web4 cannot take IPv6 flows"),
        (("tcp", "::ffff:192.0.2.0/120", 80, v4), "bind the IPv4 prefix"),
        (("tcp", "192.0.2.0/24", 80), "give 1 to 4 sockets"),
    ]
    for args, culprit in cases:
        with pytest.raises(ConfigError, match=culprit):
            d.bind(*args)
    v4.close()
    with pytest.raises(ConfigError, match="is closed"):
        d.bind("tcp", "192.0.2.0/24", 80, v4)
    assert d.bindings() == []


def test_maps_mirror_bindings(netns, d) -> None:
    a = netns.tcp_listener("127.0.0.1:0", label="a")
    b = netns.tcp_listener("[::1]:0", label="b")
    d.bind("tcp", "192.0.2.0/24", 80, a)
    d.bind("tcp", "192.0.2.128/25", None, a, b)
    d.bind("tcp", "2001:db8::/32", 443, b)
    d.bind("tcp", "192.0.2.0/24", 80, b)  # replace
    listed = d.bindings()
    assert d.kernel_rules() == {x.rule for x in listed}
    assert [(str(x.rule), x.labels) for x in listed] == [
        ("tcp 192.0.2.128/25 port *", ("a", "b")),  # most specific first
        ("tcp 192.0.2.0/24 port 80", ("b",)),
        ("tcp 2001:db8::/32 port 443", ("b",)),
    ]
    assert len(d._held) == 2  # a and b, each held once however many bindings use it
    d.unbind("tcp", "192.0.2.128/25", 0)
    d.unbind("tcp", "192.0.2.0/24", 80)
    assert list(d._held) == [id(b)]


def test_unbind_unknown_lists_what_is_bound(netns, d) -> None:
    d.bind("udp", "192.0.2.0/24", 53, netns.udp_socket("127.0.0.1:0", label="dns"))
    with pytest.raises(ConfigError, match=r"no binding tcp 192.0.2.0/24 port 53; bound: udp"):
        d.unbind("tcp", "192.0.2.0/24", 53)


def test_full_dispatcher_says_so(netns, d) -> None:
    s = netns.tcp_listener("127.0.0.1:0", label="s")
    for i in range(8):
        d.bind("tcp", f"192.0.2.{i}/32", 80, s)
    with pytest.raises(ConfigError, match="all 8 binding slots are in use"):
        d.bind("tcp", "192.0.2.99/32", 80, s)
    d.unbind("tcp", "192.0.2.0/32", 80)
    d.bind("tcp", "192.0.2.99/32", 80, s)  # the freed slot is reused
    assert d.lookups("tcp", "192.0.2.99/32", 80) == 0


def test_one_dispatcher_per_namespace(netns, d) -> None:
    assert sk_lookup(netns) is d
    with pytest.raises(ConfigError, match="map sizes are set on first use only"):
        sk_lookup(netns, max_bindings=16)
    d.close()
    assert sk_lookup(netns) is not d


def test_close_releases_fds_and_is_idempotent() -> None:
    before = len(os.listdir("/proc/self/fd"))
    ns = Namespace()
    d = sk_lookup(ns)
    d.bind("tcp", "192.0.2.0/24", 80, ns.tcp_listener("127.0.0.1:0", label="a"))
    assert d.attached
    ns.close()  # runs d.close() (registered with ns.defer)
    assert d.closed and not d.attached
    d.close()
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(HarnessError, match="closed"):
        d.bind("tcp", "192.0.2.0/24", 80)


def test_missing_object_file_is_a_libbpf_error(tmp_path) -> None:
    with pytest.raises(LibbpfError) as e:
        BpfObject(tmp_path / "none.o")
    assert e.value.errno == errno.ENOENT and "none.o" in str(e.value)


def test_a_closed_dispatcher_lets_its_namespace_go() -> None:
    """Harm: a registry entry left by close() holds the dispatcher, which holds its
    namespace: neither is ever freed (found by the curated mutation list)."""
    ns = Namespace()
    d = sk_lookup(ns)
    refs = weakref.ref(ns), weakref.ref(d)
    ns.close()
    del ns, d
    gc.collect()
    assert [r() for r in refs] == [None, None]
