"""The runner, on real namespaces: rows passed, failed, skipped and errored as they should."""

from __future__ import annotations

import sys

import pytest
from bindlab import features
from bindlab.scenario.load import load_text
from bindlab.scenario.run import ERROR, FAIL, PASS, SKIP, expected_rows, prepared, run, skip_reason

pytestmark = pytest.mark.privileged

BASE = """\
[setup]
local_routes = ["192.0.2.0/24"]

[[socket]]
label = "web"
bind = "192.0.2.10:80"
options = { reuseport = true }

[[socket]]
label = "dup"
bind = "192.0.2.10:80"
expect_errno = "EADDRINUSE"

[[socket]]
label = "eph"
bind = "192.0.2.10:0"
listen = false
options = { local_port_range = [41000, 41000] }
expect_port = 41000

[expect]
"tcp 198.18.0.1:40000 -> 192.0.2.10:80" = "web"
"tcp 198.18.0.1:40001 -> 192.0.2.10:81" = "RST"
"udp 198.18.0.1:40002 -> 192.0.2.10:81" = "ICMP"
"""


def test_rows_as_expected() -> None:
    res = run(load_text(BASE, "base.toml"))
    got = [(r.kind, r.name, r.expected, r.observed, r.status) for r in res.rows]
    assert got == [
        ("step", "dup: tcp bind 192.0.2.10:80 listen", "EADDRINUSE", "EADDRINUSE", PASS),
        ("step", "eph: tcp bind 192.0.2.10:0", "port 41000", "port 41000", PASS),
        ("flow", "tcp 198.18.0.1:40000 -> 192.0.2.10:80", "web", "web", PASS),
        ("flow", "tcp 198.18.0.1:40001 -> 192.0.2.10:81", "RST", "RST", PASS),
        ("flow", "udp 198.18.0.1:40002 -> 192.0.2.10:81", "ICMP", "ICMP", PASS),
    ]
    assert res.rows[0].detail == "bind(192.0.2.10:80) -> EADDRINUSE"
    assert res.ok and res.seconds > 0
    assert [r.name for r in expected_rows(load_text(BASE, "base.toml"))] == [
        r.name for r in res.rows
    ]


def test_mismatches_fail_with_the_packets_exchanged() -> None:
    text = BASE.replace('81" = "RST"', '81" = "web"').replace('"EADDRINUSE"', '"EACCES"')
    text = text.replace("expect_port = 41000", "expect_port = [1, 1024]")
    res = run(load_text(text, "bad.toml"))
    by_name = {r.name: r for r in res.rows}
    dup = by_name["dup: tcp bind 192.0.2.10:80 listen"]
    assert (dup.status, dup.expected, dup.observed) == (FAIL, "EACCES", "EADDRINUSE")
    eph = by_name["eph: tcp bind 192.0.2.10:0"]
    assert (eph.status, eph.observed) == (FAIL, "port 41000")
    row = by_name["tcp 198.18.0.1:40001 -> 192.0.2.10:81"]
    assert (row.status, row.expected, row.observed) == (FAIL, "web", "RST")
    assert row.detail.splitlines() == [
        "-> IP / TCP 198.18.0.1:40001 > 192.0.2.10:81 S",
        "<- IP / TCP 192.0.2.10:81 > 198.18.0.1:40001 RA",
    ]
    assert by_name["tcp 198.18.0.1:40000 -> 192.0.2.10:80"].status == PASS
    assert not res.ok and res.count(FAIL) == 3


def test_an_unexpected_socket_failure_is_an_error_of_every_row() -> None:
    text = BASE.replace('expect_errno = "EADDRINUSE"\n', "")
    res = run(load_text(text, "err.toml"))
    assert {r.status for r in res.rows} == {ERROR}
    assert res.rows[0].detail == (
        "HarnessError: err.toml:9: socket[1] 'dup': bind(192.0.2.10:80) -> EADDRINUSE, which the "
        "file does not expect (add expect_errno = 'EADDRINUSE' if it should)"
    )


def test_a_kernel_refusal_in_setup_is_an_error() -> None:
    text = BASE.replace(
        'local_routes = ["192.0.2.0/24"]', 'local_routes = ["192.0.2.0/24", "192.0.2.0/24"]'
    )
    res = run(load_text(text, "twice.toml"))
    assert {r.status for r in res.rows} == {ERROR}
    assert res.rows[0].detail == (
        "HarnessError: twice.toml: setup.local_routes[1] 192.0.2.0/24 dev lo: NetlinkError: "
        "route add local 192.0.2.0/24 dev lo: EEXIST (File exists)"
    )


def test_missing_feature_skips_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever this kernel has: the feature's detector is made to say no."""
    real = features.detect
    missing = features.Support("IP_LOCAL_PORT_RANGE", False, "setsockopt(...) -> ENOPROTOOPT")

    def detect(name: str) -> features.Support:
        return missing if name == missing.name else real(name)

    monkeypatch.setattr(features, "detect", detect)
    sc = load_text(f'requires = ["{missing.name}"]\n' + BASE, "skip.toml")
    res = run(sc)
    assert {(r.status, r.detail) for r in res.rows} == {(SKIP, missing.reason)}


def test_no_dispatcher_is_a_skip_with_a_clear_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bindlab.bpf", None)  # as if harness/bpf were absent
    text = BASE + '\n[[dispatch]]\nprefix = "198.51.100.0/24"\nport = 80\nlabel = "web"\n'
    reason = skip_reason(load_text(text, "d.toml"))
    assert reason is not None and reason.startswith("sk_lookup dispatcher not available")


def test_dispatch_bindings_and_prefix_binds_steer_flows() -> None:
    if skip_reason(load_text(BASE + '[[dispatch]]\nprefix = "192.0.2.0/24"\nlabel = "web"\n', "x")):
        pytest.skip("sk_lookup dispatcher not available")
    text = (
        BASE
        + """
[[socket]]
label = "pfx"
proto = "udp"
bind_prefix = "198.51.100.0/25:53"

[[dispatch]]
prefix = "203.0.113.0/24"
port = "any"
label = "web"
"""
    )
    text = text.replace(
        'local_routes = ["192.0.2.0/24"]',
        'local_routes = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"]',
    )
    text = text.replace(
        "[expect]\n",
        """[expect]
"tcp 198.18.0.1:50000 -> 203.0.113.7:9999" = "web"
"udp 198.18.0.1:50001 -> 198.51.100.7:53" = "pfx"
"udp 198.18.0.1:50002 -> 198.51.100.200:53" = "ICMP"
""",
    )
    res = run(load_text(text, "dispatch.toml"))
    assert [(r.name, r.status) for r in res.rows if r.status != PASS] == []
    assert len(res.rows) == 8


def test_prepared_leaves_the_namespace_to_the_caller() -> None:
    sc = load_text(BASE, "base.toml")
    with prepared(sc) as (ns, steps):
        assert steps["dup: tcp bind 192.0.2.10:80 listen"] == (
            "EADDRINUSE",
            "bind(192.0.2.10:80) -> EADDRINUSE",
        )
        assert ns.probe(["tcp 198.18.0.9:1 -> 192.0.2.10:80"]) == {
            "tcp 198.18.0.9:1 -> 192.0.2.10:80": "web"
        }
    assert ns.closed
