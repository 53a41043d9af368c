"""One strict spelling for addresses, prefixes, interface names and keys (issue 10, item 8):
no IPv6 zone ids, prefix lengths only as /LEN, no trailing newline through a ``$``, and one
interface-name rule that refuses what the kernel refuses."""

from __future__ import annotations

import errno

import pytest
from bindlab import reaper
from bindlab.errors import ConfigError, SysctlError
from bindlab.flow import check_ifname, parse_interface, parse_ip, parse_network
from bindlab.namespace import Namespace
from bindlab.net import parse_prefix, sysctl_path
from bindlab.scenario.load import ScenarioError, load_text
from bindlab.sockets import parse_addr

BASE = """\
[setup]
local_routes = ["192.0.2.0/24"]

[[socket]]
label = "a"
bind = "192.0.2.1:80"

[expect]
"tcp 198.18.0.1:1 -> 192.0.2.1:80" = "a"
"""


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_ip, "fe80::1%eth0"),
        (parse_ip, "fe80::1%1"),
        (parse_network, "fe80::%eth0/64"),
        (parse_interface, "fe80::1%eth0/64"),
    ],
)
def test_zone_ids_are_refused(parse: object, text: str) -> None:
    with pytest.raises(ConfigError, match="zone ids"):
        parse(text)  # type: ignore[operator]


@pytest.mark.parametrize("text", ["192.0.2.0/0.0.0.255", "192.0.2.0/255.255.255.0", "10.0.0.0/8.0"])
def test_netmask_and_hostmask_notation_is_refused(text: str) -> None:
    # ipaddress takes '/0.0.0.255' as /24; bindlab wants the length spelled out
    for parse in (parse_network, parse_interface, parse_prefix):
        with pytest.raises(ConfigError, match="integer after '/'"):
            parse(text)


def test_the_strict_parsers_still_take_plain_spellings() -> None:
    assert str(parse_network("2001:db8::/64")) == "2001:db8::/64"
    assert str(parse_network("192.0.2.1/24", strict=False)) == "192.0.2.0/24"
    assert str(parse_interface("203.0.113.1/24")) == "203.0.113.1/24"
    assert str(parse_ip("192.0.2.1")) == "192.0.2.1"
    assert str(parse_prefix("192.0.2.7")) == "192.0.2.7/32"


@pytest.mark.parametrize(
    "text", ["[fe80::1%eth0]:80", "[fe80::1%1]:80", "192.0.2.1:" + "8" * 5000, "192.0.2.1:080800"]
)
def test_socket_addresses_refuse_zone_ids_and_long_ports(text: str) -> None:
    with pytest.raises(ConfigError, match="bad socket address"):
        parse_addr(text)


@pytest.mark.parametrize(
    ("old", "new", "culprit"),
    [
        ('"192.0.2.0/24"]', '"192.0.2.0/0.0.0.255"]', "setup.local_routes[0]"),
        ('bind = "192.0.2.1:80"', 'bind = "[fe80::1%eth0]:80"', "socket[0].bind"),
        ('[setup]', '[setup]\naddrs = [{ dev = "lo", cidr = "fe80::1%lo/64" }]', "setup.addrs[0].cidr"),
        ('[setup]', 'name = "two\\nlines"\n[setup]', "name"),
        ('[setup]', '[setup]\nsysctls = { "net.ipv4.ip_forward\\n" = 1 }', 'setup.sysctls."net.ipv4.ip_forward\\n"'),
        ('[setup]', '[setup]\nlinks = [{ name = "a:b" }]', "setup.links[0].name"),
        ('[setup]', '[setup]\ninjectors = [{ name = ".." }]', "setup.injectors[0].name"),
    ],
)  # fmt: skip
def test_scenario_files_refuse_them_on_one_line(old: str, new: str, culprit: str) -> None:
    with pytest.raises(ScenarioError) as e:
        load_text(BASE.replace(old, new, 1), "f.toml")
    message = str(e.value)
    assert message.startswith("f.toml:") and f": {culprit}: " in message
    assert "\n" not in message


@pytest.mark.parametrize("key", ["net.ipv4.ip_forward\n", "net.ipv4.conf.lo.forwarding\n"])
def test_a_trailing_newline_does_not_pass_the_sysctl_pattern(key: str) -> None:
    with pytest.raises(SysctlError):
        sysctl_path(key)


def test_a_trailing_newline_does_not_pass_the_reaper_pattern() -> None:
    name = f"{reaper.NAME_PREFIX}1-2-abc"
    assert reaper._NAME.match(name)
    assert not reaper._NAME.match(name + "\n")


@pytest.mark.parametrize("name", ["eth0", "in1", "eth0.100", "br-lan_2", "a" * 15, "..a"])
def test_good_interface_names(name: str) -> None:
    assert check_ifname(name) == name


REFUSED_NAMES = ["", ".", "..", "a:b", "a/b", "a b", "eth0\n", "a" * 16]


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_bad_interface_names(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid interface name"):
        check_ifname(name)


def test_the_kernel_refuses_the_names_the_rule_refuses(netns: Namespace) -> None:
    """Every name the rule refuses, the kernel refuses too: dev_valid_name() answers EINVAL,
    a name of IFNAMSIZ characters or more ERANGE. So the rule keeps out nothing a link could
    be called, beyond its choice of ASCII (the kernel takes 'é')."""
    from pyroute2.netlink.exceptions import NetlinkError

    netns.ipr.link("add", ifname="ok-name", kind="ifb")  # the kind works: refusals are names'
    answers = {}
    for name in REFUSED_NAMES:
        try:
            netns.ipr.link("add", ifname=name, kind="ifb")
        except NetlinkError as e:
            answers[name] = errno.errorcode[e.code]
        else:
            answers[name] = "made"
    assert answers == {name: "ERANGE" if len(name) > 15 else "EINVAL" for name in REFUSED_NAMES}
