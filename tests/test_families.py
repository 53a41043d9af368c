"""bindlab.families: how a written (IPv4) address becomes each variant's, and the scenario
variants built from it."""

from __future__ import annotations

import pytest
from bindlab import ConfigError
from bindlab.families import FAMILY, family
from bindlab.scenario.load import load_text
from bindlab.scenario.variants import variants


@pytest.mark.parametrize(
    ("name", "endpoint", "prefix", "flow"),
    [
        ("ipv4", "192.0.2.1:80", "192.0.2.0/24", "tcp 198.18.0.1:9 -> 192.0.2.1:80"),
        (
            "ipv6",
            "[2001:db8::c000:201]:80",
            "2001:db8::c000:200/120",
            "tcp [2001:db8::c612:1]:9 -> [2001:db8::c000:201]:80",
        ),
        ("v4mapped", "[::ffff:192.0.2.1]:80", "192.0.2.0/24", "tcp 198.18.0.1:9 -> 192.0.2.1:80"),
    ],
)
def test_one_address_three_variants(name: str, endpoint: str, prefix: str, flow: str) -> None:
    fam = FAMILY[name]
    assert fam.endpoint("192.0.2.1:80") == endpoint
    assert fam.prefix("192.0.2.0/24") == prefix
    assert fam.flow("tcp 198.18.0.1:9 -> 192.0.2.1:80") == flow


def test_wildcards_loopback_and_whole_space() -> None:
    six, mapped = FAMILY["ipv6"], FAMILY["v4mapped"]
    assert six.endpoint("0.0.0.0:80") == "[::]:80" == mapped.endpoint("0.0.0.0:80")
    assert six.endpoint("127.0.0.1:80") == "[::1]:80"
    assert six.prefix("0.0.0.0/0") == "::/0"
    assert six.prefix("192.0.2.1/24") == "2001:db8::c000:201/120"  # an interface address
    assert six.flow("udp 198.19.0.1:5 -> 192.0.2.1:53 dev in1").endswith(" dev in1")


def test_bad_input_names_the_culprit() -> None:
    with pytest.raises(ConfigError, match="unknown family 'ipv5'"):
        family("ipv5")
    with pytest.raises(ConfigError, match="in IPv4 form"):
        FAMILY["ipv6"].endpoint("[2001:db8::1]:80")


def test_variants_keep_lines_and_map_every_address() -> None:
    sc = load_text(
        'families = ["ipv4", "ipv6", "v4mapped"]\n'
        '[setup]\nlocal_routes = ["192.0.2.0/24"]\n'
        '[[socket]]\nlabel = "a"\nbind = "192.0.2.1:80"\n'
        '[expect]\n"tcp 198.18.0.1:1 -> 192.0.2.1:80" = "a"\n',
        "x.toml",
    )
    four, six, mapped = variants(sc)
    assert [v.name for v in (four, six, mapped)] == ["x[ipv4]", "x[ipv6]", "x[v4mapped]"]
    assert six.setup.local_routes[0].prefix == "2001:db8::c000:200/120"
    assert ("net.ipv6.ip_nonlocal_bind", "1") in six.setup.sysctls
    assert six.sockets[0].bind_sockaddr == ("2001:db8::c000:201", 80)
    assert mapped.sockets[0].bind == "[::ffff:192.0.2.1]:80" and mapped.sockets[0].family == 6
    assert str(mapped.expect[0].flow) == "tcp 198.18.0.1:1 -> 192.0.2.1:80"
    assert six.expect[0].line == four.expect[0].line == 8  # the line as written
