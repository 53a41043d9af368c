"""add_addr returns only once the address can receive flows (issue 13, bug 1).

The kernel installs an IPv6 ``nodad`` address's local route from a work queue, a moment
after the address: a flow in between gets ICMPv6 unreachable. Each round adds a fresh
address and probes it at once; a closed port must answer RST, never ICMP.
"""

from __future__ import annotations

from collections import Counter

import pytest
from bindlab import Namespace


def _rounds(ns: Namespace, family: int, n: int) -> Counter[str]:
    ns.injector  # noqa: B018 - the default routes, so that replies reach the TUN
    seen: Counter[str] = Counter()
    for i in range(1, n + 1):
        if family == 6:
            ip = f"fd00::{i:x}"
            ns.add_addr("lo", f"{ip}/128")
            flow = f"tcp [2001:db8:ffff::1]:40000 -> [{ip}]:7007"
        else:
            ip = f"10.{i >> 8 & 255}.{i & 255}.1"
            ns.add_addr("lo", f"{ip}/32")
            flow = f"tcp 198.18.0.1:40000 -> {ip}:7007"
        seen.update(ns.probe([flow]).values())
    return seen


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_a_fresh_address_answers_at_once(netns: Namespace, family: int) -> None:
    # 300 rounds: today's kernel leaves the IPv6 route out for ~10% of immediate probes.
    assert _rounds(netns, family, 300) == {"RST": 300}


@pytest.mark.stress
@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_a_fresh_address_answers_at_once_2000(netns: Namespace, family: int) -> None:
    assert _rounds(netns, family, 2000) == {"RST": 2000}


def test_is_local_follows_the_address(netns: Namespace) -> None:
    assert not netns.is_local("fd00::99") and not netns.is_local("10.1.1.1")
    netns.add_addr("lo", "fd00::99/128")
    netns.add_addr("lo", "10.1.1.1/32")
    assert netns.is_local("fd00::99") and netns.is_local("10.1.1.1")
