"""Flow parsing and printing, and the errors bad flows get."""

from __future__ import annotations

import ipaddress

import pytest
from bindlab import Flow, FlowSyntaxError
from bindlab.flow import endpoint


@pytest.mark.parametrize(
    "text",
    [
        "tcp 198.18.0.1:40000 -> 192.0.2.10:80",
        "udp 198.18.0.1:1 -> 192.0.2.10:65535",
        "tcp [2001:db8:ffff::1]:5000 -> [2001:db8:1::5]:80",
        "udp 198.18.0.1:53 -> 192.0.2.1:53 dev in1",
        "tcp [2001:db8::9]:1 -> [2001:db8::1]:2 dev eth0.100",
    ],
)
def test_round_trip(text: str) -> None:
    assert str(Flow.parse(text)) == text


def test_fields() -> None:
    f = Flow.parse("tcp 198.18.0.1:40000 -> 192.0.2.10:80 dev in1")
    assert f == Flow(
        "tcp",
        ipaddress.ip_address("198.18.0.1"),
        40000,
        ipaddress.ip_address("192.0.2.10"),
        80,
        "in1",
    )
    assert f.version == 4
    assert f.key == (6, bytes([198, 18, 0, 1]), 40000, bytes([192, 0, 2, 10]), 80)


def test_normalises_spacing_case_and_ipv6_spelling() -> None:
    f = Flow.parse("  TCP  [2001:DB8:0::1]:5000->[2001:db8::0:5]:80  ")
    assert str(f) == "tcp [2001:db8::1]:5000 -> [2001:db8::5]:80"


def test_equal_flows_hash_equal_and_dev_matters() -> None:
    a = Flow.parse("udp 198.18.0.1:1 -> 192.0.2.1:2")
    assert a == Flow.parse("udp 198.18.0.1:1 ->  192.0.2.1:2")
    assert hash(a) == hash(Flow.parse("udp 198.18.0.1:1 -> 192.0.2.1:2"))
    assert a != Flow.parse("udp 198.18.0.1:1 -> 192.0.2.1:2 dev x")


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("sctp 198.18.0.1:1 -> 192.0.2.1:80", "protocol 'sctp'"),
        ("tcp 198.18.0.1:1 => 192.0.2.1:80", "does not match"),
        ("tcp 198.18.0.1 -> 192.0.2.1:80", "has no :PORT"),
        ("tcp 198.18.0.1:0 -> 192.0.2.1:80", "source port '0'"),
        ("tcp 198.18.0.1:1 -> 192.0.2.1:65536", "destination port '65536'"),
        ("tcp 198.18.0.1:1 -> 192.0.2.1:http", "destination port 'http'"),
        ("tcp 198.18.0.300:1 -> 192.0.2.1:80", "'198.18.0.300' is not an IP address"),
        ("tcp 2001:db8::1:1 -> [2001:db8::2]:80", "brackets"),
        ("tcp [198.18.0.1]:1 -> 192.0.2.1:80", "brackets are for IPv6 only"),
        ("tcp [2001:db8::1:1 -> [2001:db8::2]:80", "[ADDR]:PORT"),
        ("tcp 198.18.0.1:1 -> [2001:db8::2]:80", "different IP versions"),
        ("tcp 198.18.0.1:1 -> 192.0.2.1:80 dev this-name-is-too-long", "interface name"),
        ("", "does not match"),
    ],
)
def test_errors_name_the_culprit(text: str, culprit: str) -> None:
    with pytest.raises(FlowSyntaxError) as e:
        Flow.parse(text)
    assert culprit in str(e.value)
    assert repr(text) in str(e.value)  # the whole flow is quoted


def test_non_string_is_a_clear_error() -> None:
    with pytest.raises(FlowSyntaxError, match="a flow is a string"):
        Flow.parse(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ip", "port", "text"),
    [
        ("192.0.2.1", 80, "192.0.2.1:80"),
        ("2001:db8::1", 443, "[2001:db8::1]:443"),
        (ipaddress.ip_address("::"), 0, "[::]:0"),
    ],
)
def test_endpoint(ip: object, port: int, text: str) -> None:
    assert endpoint(ip, port) == text


# -- bounded, linear parsing (issue 10, item 7) ------------------------------------------


def test_a_long_flow_is_refused_by_its_length_not_parsed() -> None:
    # The old regex backtracked over every '->' (20 s for this one); now the length bound
    # answers first, and the message shows the start of the flow, not all 60 KB of it.
    text = "tcp " + "a->" * 20000 + " x y"
    with pytest.raises(FlowSyntaxError, match=r"60008 characters; a flow has at most 256") as e:
        Flow.parse(text)
    assert len(str(e.value)) < 300


def test_many_arrows_within_the_bound_are_one_clear_error() -> None:
    with pytest.raises(FlowSyntaxError, match="more than one '->'"):
        Flow.parse("tcp " + "a->" * 80 + " x y")


@pytest.mark.parametrize("digits", [6, 300, 4400])
def test_a_port_of_many_digits_is_a_flow_syntax_error(digits: int) -> None:
    # int() refuses strings over 4300 digits with a plain ValueError; the parser never
    # calls it on more than five
    text = f"tcp 198.18.0.1:{'1' * digits} -> 192.0.2.1:80"
    with pytest.raises(FlowSyntaxError, match=r"source port|at most 256"):
        Flow.parse(text)


# -- strict spellings (issue 10, item 8) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "culprit"),
    [
        ("tcp [fe80::1%eth0]:1 -> [fe80::2]:80", "zone ids"),
        ("tcp [fe80::1]:1 -> [fe80::2%1]:80", "zone ids"),
        ("tcp 198.18.0.1:1 -> 192.0.2.1:80 dev ..", "invalid interface name '..'"),
        ("tcp 198.18.0.1:1 -> 192.0.2.1:80 dev .", "invalid interface name '.'"),
        ("tcp 198.18.0.1:1 -> 192.0.2.1:80 dev a:b", "invalid interface name 'a:b'"),
        ("tcp 198.18.0.1:1 -> 192.0.2.1:80 dev a/b", "invalid interface name 'a/b'"),
        ("tcp 198.18.0.1:1 -> 192.0.2.1:80 dev in1 x", "unexpected 'dev in1 x'"),
        ("tcp 198.18.0.1:1 -> 192.0.2.1:80 via in1", "unexpected 'via in1'"),
    ],
)
def test_lenient_spellings_are_refused(text: str, culprit: str) -> None:
    with pytest.raises(FlowSyntaxError) as e:
        Flow.parse(text)
    assert culprit in str(e.value)


def test_a_flow_error_stays_one_short_line_whatever_the_culprit() -> None:
    """Escapes lengthen a repr (one astral character is printed as 10): the bound holds."""
    odd = "\U00018cd6\U00018d09" * 40
    for text in (
        f"tcp 198.18.0.1:1 -> 192.0.2.1:80 dev 00{odd}in9",
        f"udp {odd}[2001:db8::1]:2 -> [2001:db8::2]:3",
    ):
        with pytest.raises(FlowSyntaxError) as e:
            Flow.parse(text)
        message = str(e.value)
        assert "\n" not in message and len(message) <= 400, message
