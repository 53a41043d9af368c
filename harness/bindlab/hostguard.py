"""A snapshot of the host namespace (links, addresses, routes, known sysctls) to prove the
harness changed nothing outside the namespaces it made."""

from __future__ import annotations

import os
from typing import Any

# Host sysctls a careless harness would be most likely to touch.
WATCHED_SYSCTLS = (
    "net/ipv4/ip_local_port_range",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/rp_filter",
    "net/ipv4/icmp_ratelimit",
    "net/ipv4/icmp_msgs_per_sec",
    "net/ipv4/icmp_msgs_burst",
    "net/ipv6/icmp/ratelimit",
    "net/ipv6/conf/all/forwarding",
    "net/core/somaxconn",
    "net/ipv4/tcp_syncookies",
)


def snapshot() -> dict[str, Any]:
    """Links, addresses, routes (all tables) and watched sysctls of this thread's namespace.

    Volatile attributes (counters, route expiry) are left out; what remains changes only
    when somebody configures the namespace.
    """
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = sorted(
            (m["index"], m.get_attr("IFLA_IFNAME"), m["flags"] & 0x1, m.get_attr("IFLA_MTU"))
            for m in ipr.get_links()
        )
        addrs = sorted(
            (m["index"], m["family"], m.get_attr("IFA_ADDRESS"), m["prefixlen"])
            for m in ipr.get_addr()
        )
        routes = sorted(
            (
                m["family"],
                m["table"],
                m["type"],
                str(m.get_attr("RTA_DST")),
                m["dst_len"],
                m.get_attr("RTA_OIF") or 0,
                str(m.get_attr("RTA_GATEWAY")),
            )
            for fam in (2, 10)
            for m in ipr.route("dump", family=fam)
        )
    sysctls = {}
    for key in WATCHED_SYSCTLS:
        path = "/proc/sys/" + key
        if os.path.exists(path):
            with open(path) as f:
                sysctls[key] = f.read().strip()
    return {"links": links, "addresses": addrs, "routes": routes, "sysctls": sysctls}


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Human-readable differences between two snapshots (empty when equal)."""
    out: list[str] = []
    for part in ("links", "addresses", "routes"):
        b, a = set(before[part]), set(after[part])
        out += [f"{part}: removed {x}" for x in sorted(b - a, key=str)]
        out += [f"{part}: added {x}" for x in sorted(a - b, key=str)]
    for key in sorted(set(before["sysctls"]) | set(after["sysctls"])):
        if before["sysctls"].get(key) != after["sysctls"].get(key):
            out.append(
                f"sysctl {key}: {before['sysctls'].get(key)!r} -> {after['sysctls'].get(key)!r}"
            )
    return out
