"""The dispatcher's trie key/value layouts and its precedence rule (pure Python)."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from bindlab import ConfigError
from bindlab.bpf.keys import (
    ANY_PORT,
    KEY,
    MAX_FALLBACK,
    Rule,
    decode_key,
    decode_value,
    encode_value,
    lookup_key,
    parse_port,
    parse_prefix,
    select,
)

ip = ipaddress.ip_address


def test_ipv4_key_layout() -> None:
    key = Rule.make("tcp", "192.0.2.0/24", 80).key()
    assert len(key) == KEY.size == 24
    # prefixlen 32 + 96 + 24, protocol 6, version 4, port 80 (host order), ::ffff:192.0.2.0
    assert key == struct.pack("=IBBH", 152, 6, 4, 80) + bytes(10) + b"\xff\xff\xc0\x00\x02\x00"


def test_ipv6_key_layout_and_any_port() -> None:
    key = Rule.make("udp", "2001:db8::/32", None).key()
    assert key[:8] == struct.pack("=IBBH", 32 + 32, 17, 6, 0)
    assert key[8:] == ipaddress.IPv6Address("2001:db8::").packed


@pytest.mark.parametrize(
    "rule",
    [
        Rule.make("tcp", "192.0.2.128/25", 443),
        Rule.make("udp", "0.0.0.0/0", ANY_PORT),
        Rule.make("tcp", "2001:db8:1::/64", 80),
        Rule.make("udp", "::/0", ANY_PORT),
        Rule.make("tcp", "2001:db8::1", 22),
    ],
    ids=str,
)
def test_key_roundtrip(rule: Rule) -> None:
    assert decode_key(rule.key()) == rule


def test_ipv4_and_ipv6_default_routes_have_distinct_keys() -> None:
    # The version byte keeps ::/0 from matching IPv4 flows in the trie.
    assert Rule.make("tcp", "::/0", 0).key() != Rule.make("tcp", "0.0.0.0/0", 0).key()
    assert lookup_key("tcp", ip("192.0.2.1"), 80)[5] == 4


def test_lookup_key_is_full_length() -> None:
    assert struct.unpack("=I", lookup_key("tcp", ip("2001:db8::1"), 80)[:4]) == (160,)
    assert lookup_key("tcp", ip("192.0.2.1"), 80)[8:] == bytes(10) + b"\xff\xff\xc0\x00\x02\x01"


def test_value_layout() -> None:
    v = encode_value(7, ipaddress.ip_network("192.0.2.0/24"), [3, 5], 2, 9)
    assert v == struct.pack("=9I", 7, 120, 2, 2, 9, 3, 5, 0, 0)
    assert decode_value(v) == (7, 120, [3, 5])
    with pytest.raises(ConfigError, match="1 to 4 sockets"):
        encode_value(0, ipaddress.ip_network("::/0"), range(MAX_FALLBACK + 1))


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("192.0.2.1/24", "did you mean 192.0.2.0/24"),
        ("192.0.2.0/33", "bad prefix"),
        ("example.org/24", "bad prefix"),
        ("2001:db8::1/32", "did you mean 2001:db8::/32"),
    ],
)
def test_bad_prefix_names_the_culprit(text: str, culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit):
        parse_prefix(text)


def test_bare_address_is_a_host_prefix() -> None:
    assert parse_prefix("192.0.2.7").prefixlen == 32
    assert parse_prefix("2001:db8::7").prefixlen == 128


@pytest.mark.parametrize("port", [-1, 65536, "80", True, 1.5])
def test_bad_port(port: object) -> None:
    with pytest.raises(ConfigError, match="bad port"):
        parse_port(port)  # type: ignore[arg-type]


def test_unknown_protocol() -> None:
    with pytest.raises(ConfigError, match="unknown protocol 'sctp'"):
        Rule.make("sctp", "192.0.2.0/24", 80)


RULES = [
    Rule.make("tcp", "192.0.2.0/24", ANY_PORT),
    Rule.make("tcp", "192.0.2.0/24", 80),
    Rule.make("tcp", "192.0.2.128/25", ANY_PORT),
    Rule.make("tcp", "192.0.2.200/32", 80),
    Rule.make("udp", "192.0.2.0/24", 53),
    Rule.make("tcp", "::/0", ANY_PORT),
]


@pytest.mark.parametrize(
    ("proto", "dst", "port", "want"),
    [
        ("tcp", "192.0.2.1", 80, RULES[1]),  # specific port beats any port at equal length
        ("tcp", "192.0.2.1", 81, RULES[0]),
        ("tcp", "192.0.2.129", 80, RULES[2]),  # longer prefix beats specific port
        ("tcp", "192.0.2.200", 80, RULES[3]),
        ("udp", "192.0.2.1", 53, RULES[4]),
        ("udp", "192.0.2.1", 54, None),
        ("tcp", "198.51.100.1", 80, None),  # ::/0 is IPv6 only
        ("tcp", "2001:db8::1", 80, RULES[5]),
    ],
)
def test_reference_precedence(proto: str, dst: str, port: int, want: Rule | None) -> None:
    assert select(RULES, proto, ip(dst), port) == want


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("192.0.2.0/0.0.0.255", "prefix length"),
        ("fe80::/64%eth0", "zone"),
        ("192.0.2.1/24", "192.0.2.0/24"),
    ],
    ids=["hostmask", "zone-id", "host-bits"],
)
def test_binding_prefixes_follow_the_strict_prefix_rule(text: str, culprit: str) -> None:
    """Dispatcher bindings and prefix binds parse prefixes as flows and routes do."""
    with pytest.raises(ConfigError) as e:
        parse_prefix(text)
    assert culprit in str(e.value) and text in str(e.value)
