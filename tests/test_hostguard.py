"""The host guard sees changes to links, addresses, routes and sysctls; a namespace's don't leak."""

from __future__ import annotations

import pytest
from bindlab import Namespace, hostguard


def test_diff_names_each_change() -> None:
    before = {"links": [(1, "lo", 1, 65536)], "addresses": [], "routes": [], "sysctls": {"a": "1"}}
    after = {
        "links": [(1, "lo", 1, 65536), (9, "x0", 0, 1500)],
        "addresses": [(9, 2, "192.0.2.1", 24)],
        "routes": [],
        "sysctls": {"a": "2"},
    }
    assert hostguard.diff(before, after) == [
        "links: added (9, 'x0', 0, 1500)",
        "addresses: added (9, 2, '192.0.2.1', 24)",
        "sysctl a: '1' -> '2'",
    ]
    assert hostguard.diff(after, after) == []


@pytest.mark.privileged
def test_heavy_namespace_work_leaves_the_host_unchanged() -> None:
    before = hostguard.snapshot()
    with Namespace() as ns:
        ns.add_link("d0", kind="dummy", addrs=["203.0.113.1/24"])
        ns.add_local_route("192.0.2.0/24")
        ns.sysctl("net.ipv4.ip_local_port_range", "40000 40001")
        ns.sysctl("net.ipv4.conf.all.rp_filter", 2)
        ns.tcp_listener("192.0.2.1:80", label="web")
        assert ns.probe(["tcp 198.18.0.1:1 -> 192.0.2.1:80"]) == {
            "tcp 198.18.0.1:1 -> 192.0.2.1:80": "web"
        }
        # ...and the snapshot taken inside the namespace does see that work
        with ns.enter():
            inside = hostguard.snapshot()
        assert any("d0" in str(x) for x in hostguard.diff(before, inside))
    assert hostguard.diff(before, hostguard.snapshot()) == []
