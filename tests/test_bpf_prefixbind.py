"""SO_BINDTOPREFIX's conflict rule and option encoding (pure Python)."""

from __future__ import annotations

import errno
import ipaddress
import struct

import pytest
from bindlab.bpf.prefixbind import PrefixSocket, conflicts, in_use, overlaps, prefix_struct

net = ipaddress.ip_network


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ("192.0.2.0/24", "192.0.2.0/24", True),
        ("192.0.2.0/24", "192.0.2.128/25", True),  # masked with /24 both are 192.0.2.0
        ("192.0.2.128/25", "192.0.2.0/24", True),
        ("192.0.2.0/25", "192.0.2.128/25", False),  # adjacent halves
        ("192.0.2.0/24", "198.51.100.0/24", False),
        ("0.0.0.0/0", "203.0.113.7/32", True),
        ("192.0.2.7/32", "192.0.2.8/32", False),
        ("2001:db8::/32", "2001:db8:1::/48", True),
        ("2001:db8:1::/48", "2001:db8:2::/48", False),
        ("::/0", "0.0.0.0/0", False),  # families never overlap
    ],
)
def test_overlaps(a: str, b: str, want: bool) -> None:
    assert overlaps(net(a), net(b)) is want


def ps(prefix: str, reuse: bool = False, proto: str = "tcp", port: int = 80, label: str = "x"):
    return PrefixSocket(proto, net(prefix), port, reuse, label)


@pytest.mark.parametrize(
    ("new", "old", "want"),
    [
        (ps("192.0.2.0/25"), ps("192.0.2.0/24"), True),
        (ps("192.0.2.0/25", True), ps("192.0.2.0/24"), True),  # one side lacks SO_REUSEPORT
        (ps("192.0.2.0/25", True), ps("192.0.2.0/24", True), False),  # both: allowed
        (ps("192.0.2.0/24"), ps("192.0.2.0/24", port=81), False),  # other port
        (ps("192.0.2.0/24"), ps("192.0.2.0/24", proto="udp"), False),  # other protocol
        (ps("192.0.2.0/25"), ps("192.0.2.128/25"), False),
    ],
)
def test_conflict_rule(new: PrefixSocket, old: PrefixSocket, want: bool) -> None:
    assert conflicts(new, old) is want


def test_in_use_names_both_sockets() -> None:
    e = in_use(ps("192.0.2.0/25", label="apache"), ps("192.0.2.0/24", True, label="nginx"))
    assert e.errno == errno.EADDRINUSE
    assert "apache (tcp 192.0.2.0/25 port 80)" in str(e)
    assert "nginx (tcp 192.0.2.0/24 port 80)" in str(e)
    assert "apache lacks SO_REUSEPORT" in str(e)


def test_prefix_struct_layout() -> None:
    assert prefix_struct(net("192.0.2.0/24")) == b"\xc0\x00\x02\x00" + struct.pack("=B3x", 24)
    v6 = prefix_struct(net("2001:db8::/32"))
    assert len(v6) == 20 and v6[16] == 32 and v6[:4] == b"\x20\x01\x0d\xb8"
