"""The scenario loader: what a good file becomes, and the one clear error each bad file gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bindlab import ConfigError
from bindlab.scenario.load import (
    DISPATCH,
    PROGRAM,
    SETUP,
    SOCKET,
    TOP,
    Scenario,
    ScenarioError,
    load,
    load_text,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "scenarios"
GOOD = """\
name = "demo"
requires = ["SO_REUSEPORT"]

[setup]
local_routes = ["192.0.2.0/24", { prefix = "2001:db8:1::/64", dev = "lo" }]
links = [{ name = "d0", kind = "dummy", addrs = ["203.0.113.1/24"] }]
injectors = [{ name = "inj1", clients = ["198.18.1.0/24"] }]
sysctls = { "net.ipv4.ip_local_port_range" = "40000 40001", "net.ipv6.ip_nonlocal_bind" = 1 }

[[socket]]
label = "web"
bind = "192.0.2.10:80"
options = { reuseport = true, local_port_range = [40000, 40001], bindtoifindex = "inj1" }

[[socket]]
label = "late"
bind = "192.0.2.10:0"
listen = false
expect_port = [40000, 40001]

[[socket]]
label = "dns"
proto = "udp"
bind = "[2001:db8:1::1]:53"
connect = "[2001:db8:ffff::1]:5353"
expect_errno = "OK"

[[socket]]
label = "pfx"
bind_prefix = "192.0.2.128/25:443"

[[dispatch]]
prefix = "198.51.100.0/24"
port = "any"
label = "web"

[expect]
"tcp 198.18.0.1:40000 -> 192.0.2.10:80" = "web"      # a comment
"tcp 198.18.1.1:40000 -> 192.0.2.10:80 dev inj1" = ["web", "RST"]
"udp [2001:db8:ffff::1]:1 -> [2001:db8:1::1]:53" = "NONE"
"""


def test_a_good_file_becomes_dataclasses() -> None:
    sc = load_text(GOOD, "demo.toml")
    assert sc.name == "demo" and sc.requires == ("SO_REUSEPORT",)
    assert [r.prefix for r in sc.setup.local_routes] == ["192.0.2.0/24", "2001:db8:1::/64"]
    assert sc.setup.links[0].kind == "dummy" and sc.setup.links[0].addrs == ("203.0.113.1/24",)
    assert sc.setup.injectors[0].clients == ("198.18.1.0/24",)
    assert dict(sc.setup.sysctls) == {
        "net.ipv4.ip_local_port_range": "40000 40001",
        "net.ipv6.ip_nonlocal_bind": "1",
    }
    web, late, dns, pfx = sc.sockets
    assert (web.proto, web.family, web.listen) == ("tcp", 4, True)
    assert dict(web.options) == {
        "reuseport": True,
        "local_port_range": (40000, 40001),
        "bindtoifindex": "inj1",
    }
    assert not late.listen and late.expected == "port 40000-40001"
    assert (dns.family, dns.listen, dns.expected) == (6, False, "OK")
    assert pfx.bind_prefix == ("192.0.2.128/25", 443) and not pfx.listen
    assert pfx.step == "pfx: tcp bind_prefix 192.0.2.128/25:443"
    assert sc.needs_dispatcher and sc.dispatch[0].port is None
    assert [e.expected for e in sc.expect] == ["web", "web|RST", "NONE"]
    assert [e.line for e in sc.expect] == [38, 39, 40]
    assert web.line == 10 and sc.dispatch[0].line == 32


SHIPPED = [
    *FIXTURES.rglob("*.toml"),
    *(ROOT / "harness" / "bindlab" / "data" / "rfc").glob("*.toml"),
]


@pytest.mark.parametrize("path", sorted(SHIPPED), ids=lambda p: p.name)
def test_every_shipped_file_loads(path: Path) -> None:
    sc = load(path)
    assert isinstance(sc, Scenario) and (sc.expect or any(s.checked for s in sc.sockets))
    if path.parent.name == "rfc":  # patch examples carry their claim and its source
        assert sc.claim and sc.source and "\n" not in sc.claim


def test_the_schema_documents_exactly_what_the_loader_accepts() -> None:
    schema = json.loads((ROOT / "harness" / "bindlab" / "data" / "schema.json").read_text())
    defs = schema["$defs"]
    assert set(schema["properties"]) == set(TOP)
    assert set(defs["setup"]["properties"]) == set(SETUP)
    assert set(defs["socket"]["properties"]) == set(SOCKET)
    assert set(defs["binding"]["properties"]) == set(DISPATCH)
    assert set(defs["program"]["properties"]) == set(PROGRAM)
    from bindlab import features
    from bindlab.sockets import OPTIONS

    assert set(defs["socket"]["properties"]["options"]["properties"]) == set(OPTIONS)
    assert set(schema["properties"]["requires"]["items"]["enum"]) == set(features.PROBES)


def _error(text: str) -> str:
    with pytest.raises(ScenarioError) as e:
        load_text(text, "bad.toml")
    assert isinstance(e.value, ConfigError)
    return str(e.value)


SOCK = '[[socket]]\nlabel = "a"\nbind = "192.0.2.1:80"\n'
ROW = '[expect]\n"tcp 198.18.0.1:1 -> 192.0.2.1:80" = "a"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x\n', "bad.toml:1: TOML syntax error: "),
        ("x = 1\n" + SOCK + ROW, "bad.toml:1: x: unknown key 'x'; expected one of: name,"),
        (
            SOCK.replace("label", "lable") + ROW,
            "bad.toml:2: socket[0].lable: unknown key 'lable'; did you mean 'label'?",
        ),
        (
            SOCK.replace(":80", ":99999") + ROW,
            "bad.toml:3: socket[0].bind: bad socket address '192.0.2.1:99999': port '99999' "
            "is not in 0-65535 (expected 'IP:PORT' or '[IPv6]:PORT', port 0-65535)",
        ),
        (
            '[setup]\nlocal_routes = ["192.0.2.1/24"]\n' + SOCK + ROW,
            "bad.toml:2: setup.local_routes[0]: bad prefix '192.0.2.1/24': "
            "192.0.2.1/24 has host bits set",
        ),
        (
            SOCK.replace('"a"', '"two words"') + ROW,
            "bad.toml:2: socket[0].label: bad socket label 'two words'",
        ),
        (SOCK.replace('"a"', '"RST"') + ROW, "socket label 'RST' is reserved for verdicts"),
        (
            SOCK + SOCK.replace('"a"', '"b"').replace(":80", ":0") + 'bind_port_of = "c"\n' + ROW,
            "socket[1].bind_port_of: 'c' is not one of",
        ),
        (
            'families = ["ipv4", "ipv5"]\n' + SOCK + ROW,
            "bad.toml:1: families[1]: 'ipv5' is not one of",
        ),
        (
            'families = ["ipv4", "ipv4"]\n' + SOCK + ROW,
            "bad.toml:1: families: a family is named twice",
        ),
        (
            'families = ["ipv6"]\n' + SOCK.replace("192.0.2.1:80", "[2001:db8::1]:80") + ROW,
            "bad.toml: as ipv6: socket address '2001:db8::1': a family-neutral scenario "
            "writes addresses once, in IPv4 form",
        ),
        (
            SOCK + SOCK.replace('"a"', '"b"') + 'bind_port_of = "a"\n' + ROW,
            "socket[1].bind_port_of: needs 'bind' with port 0",
        ),
        (
            SOCK + ROW.replace('= "a"', '= "b"'),
            "bad.toml:5: expect.\"tcp 198.18.0.1:1 -> 192.0.2.1:80\": 'b' names no socket; "
            "expected one of: a, ICMP, NONE, RST, UNLABELLED",
        ),
        (
            SOCK + ROW.replace("tcp 198", "sctp 198"),
            "protocol 'sctp' is not tcp or udp",
        ),
        (SOCK + ROW.replace(":80", ":80 dev inj9"), "dev 'inj9' is not an injector"),
        ('requires = ["WARP_DRIVE"]\n' + SOCK + ROW, "bad.toml:1: requires[0]: 'WARP_DRIVE'"),
        (SOCK + SOCK + ROW, "bad.toml:5: socket[1].label: label 'a' is used by another socket"),
        (SOCK, "bad.toml: nothing to check"),
        (
            SOCK + 'expect_errno = "EADDRNOTINUSE"\n',
            "socket[0].expect_errno: 'EADDRNOTINUSE' is not an errno name like 'EADDRINUSE', "
            "nor 'OK' (did you mean 'EADDRINUSE'?)",
        ),
        (SOCK + "expect_port = [2, 1]\n", "expected a port 1-65535 or [lo, hi] with lo <= hi"),
        (SOCK + 'options = { reuseprt = true }\n' + ROW, "did you mean 'reuseport'?"),
        (SOCK + "options = { reuseport = 1 }\n" + ROW, "bad.toml:4: socket[0].options.reuseport: expected True/False, got 1"),
        (SOCK + 'proto = "udp"\nlisten = true\n' + ROW, "only a bound, unconnected TCP socket can listen"),
        ('[[socket]]\nlabel = "a"\nfamily = 6\nbind = "192.0.2.1:80"\n' + ROW, "an IPv4 address on a family = 6 socket"),
        ('[[socket]]\nlabel = "a"\n' + ROW, "socket[0]: needs 'bind', 'bind_prefix', 'connect' or 'family'"),
        (SOCK + '[[dispatch]]\nprefix = "192.0.2.0/24"\nlabel = "zz"\n' + ROW, "bad.toml:6: dispatch[0].label: 'zz' is not one of: 'a'"),
        (SOCK + '[[dispatch]]\nprefix = "192.0.2.0/24"\nport = 0\nlabel = "a"\n' + ROW, "dispatch[0].port"),
        ('[setup]\nsysctls = { "kernel.panic" = 1 }\n' + SOCK + ROW, 'setup.sysctls."kernel.panic": sysctl \'kernel.panic\' refused'),
        ('[setup]\nlinks = [{ name = "d0", kind = "wormhole" }]\n' + SOCK + ROW, "'wormhole' is not one of: 'bridge', 'dummy'"),
        ('[setup]\ninjectors = [{ name = "blinj0" }]\n' + SOCK + ROW, "'blinj0' is taken"),
        (SOCK + '[expect]\n"tcp 198.18.0.1:1 -> 192.0.2.1:80" = "a"\n"tcp  198.18.0.1:1 -> 192.0.2.1:80" = "a"\n', "the same flow as"),
        ("setup = 3\n" + SOCK + ROW, "bad.toml:1: setup: expected a table, got an integer (3)"),
        (SOCK + 'bind_prefix = "192.0.2.0/24:80"\n' + ROW, "a prefix-bound socket has no 'bind' or 'connect'"),
        # the core's parser raises a bare ValueError here; the loader still names file, line, key
        (SOCK + ROW.replace("192.0.2.1:80", "192.0.2.1:²"), "bad.toml:5: expect.\"tcp 198.18.0.1:1 -> 192.0.2.1:²\": bad flow"),
    ],
)  # fmt: skip
def test_bad_files_get_one_clear_error(text: str, message: str) -> None:
    assert message in _error(text)


def test_bytes_that_are_not_utf8() -> None:
    assert _error(b"name = \xff\n").startswith("bad.toml:1: not UTF-8 text")  # type: ignore[arg-type]


def test_a_missing_file() -> None:
    with pytest.raises(ScenarioError, match=r"nope\.toml: cannot read"):
        load("/nonexistent/nope.toml")
