"""Links, addresses, routes and sysctls inside a :class:`~bindlab.netns.NetNS`.

Everything goes through netlink on handles opened inside the namespace: the requests every
test makes (routes, link up) as raw messages (:mod:`bindlab.rtnl`, ~10x cheaper), the rest
through pyroute2. Nothing here parses ``ip`` output, and nothing here can reach the host's
namespace.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bindlab import rtnl
from bindlab.errors import ConfigError, HarnessError, SysctlError
from bindlab.flow import check_ifname, parse_interface, parse_network
from bindlab.netns import StashKey

if TYPE_CHECKING:
    from bindlab.netns import NetNS

_LINKS: StashKey[dict[str, Link]] = StashKey("links")
_RTNL: StashKey[rtnl.Rtnl] = StashKey("rtnl")

IFA_F_NODAD = 0x02  # <linux/if_addr.h>
IFF_UP = 0x1  # <linux/if.h>
RTN_LOCAL = 2  # <linux/rtnetlink.h>
ADDR_WAIT = 2.0  # s: how long add_addr waits for an address's local route
EOPNOTSUPP = 95

# Kinds a test may ask for, and what stands in when the running kernel lacks them.
# ifb is the closest to dummy: NOARP, carrier up, drops what it transmits.
STAND_INS = {"dummy": "ifb"}
KINDS = {"dummy", "ifb", "veth", "vrf", "bridge", "macvlan", "vxlan"}
_SYSCTL_KEY = re.compile(r"net(\.[A-Za-z0-9_-]+)+\Z")


@dataclass
class Link:
    """A link the harness created. ``kind`` is what the kernel made; when it differs from
    ``requested_kind`` the kernel lacked the requested kind and ``substitute`` says why."""

    name: str
    index: int
    kind: str
    requested_kind: str
    addrs: list[str] = field(default_factory=list)
    substitute: str | None = None

    def __str__(self) -> str:
        sub = f" (stand-in for {self.requested_kind}: {self.substitute})" if self.substitute else ""
        return f"{self.name}#{self.index} {self.kind}{sub}"


def links(ns: NetNS) -> dict[str, Link]:
    """The links made in ``ns`` by :func:`add_link`, by name."""
    return ns.stash.setdefault(_LINKS, dict)


def parse_prefix(text: str, what: str = "prefix") -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse ``ADDR/LEN`` (host bits must be clear) or a bare address, naming the culprit."""
    try:
        return parse_network(text, strict=True)
    except ValueError as e:
        raise ConfigError(f"invalid {what} {text!r}: {e}") from None


def rtnetlink(ns: NetNS) -> rtnl.Rtnl:
    """The namespace's raw rtnetlink handle (opened inside it on first use, closed with it)."""
    handle = ns.stash.get(_RTNL)
    if handle is None:
        with ns.enter():
            handle = ns.stash.setdefault(_RTNL, rtnl.Rtnl)
        ns.defer(handle.close)
    return handle


def link_index(ns: NetNS, name: str) -> int:
    """The ifindex of ``name`` inside the namespace (ConfigError if there is none)."""
    if name == "lo":
        return 1  # the loopback device is always the first
    with ns.enter():  # SIOCGIFINDEX on a socket of the calling thread's namespace
        try:
            return socket.if_nametoindex(name)
        except OSError:
            raise ConfigError(f"no link named {name!r} in {ns!r}") from None


def set_up(ns: NetNS, name: str) -> None:
    index = link_index(ns, name)
    rtnetlink(ns).link_set(index, up=True, what=f"link set {name} up")


def _add_route(
    ns: NetNS,
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
    dev: str,
    *,
    local: bool = False,
) -> None:
    oif = link_index(ns, dev)
    what = f"route add {'local ' if local else ''}{net} dev {dev}"
    rtnetlink(ns).route_add(
        socket.AF_INET if net.version == 4 else socket.AF_INET6,
        net.network_address.packed,
        net.prefixlen,
        oif=oif,
        table=rtnl.RT_TABLE_LOCAL if local else rtnl.RT_TABLE_MAIN,
        rtype=rtnl.RTN_LOCAL if local else rtnl.RTN_UNICAST,
        scope=rtnl.RT_SCOPE_HOST if local else rtnl.RT_SCOPE_UNIVERSE,
        what=what,
    )


def add_local_route(ns: NetNS, prefix: str, dev: str = "lo") -> None:
    """``ip route add local PREFIX dev DEV``: every address of PREFIX is local to the namespace.

    Netlink wants ``scope host`` for type local (``ip`` adds it implicitly); without it, EINVAL.
    A route the kernel refuses (e.g. one already there) raises :class:`rtnl.NetlinkError`.
    """
    _add_route(ns, parse_prefix(prefix, "local route prefix"), dev, local=True)


def add_route(ns: NetNS, prefix: str, dev: str) -> None:
    """A plain unicast route to ``prefix`` through ``dev``."""
    _add_route(ns, parse_prefix(prefix, "route prefix"), dev)


def add_addr(ns: NetNS, dev: str, cidr: str, wait: float = ADDR_WAIT) -> None:
    """Add ``ADDR/LEN`` to ``dev`` and return once the address is usable.

    IPv6 gets ``nodad``; even so the kernel installs the address's route in table ``local``
    a moment after the address (from a work queue), and a flow in between gets ICMPv6
    unreachable. So, on a link that is up, this waits (at most ``wait`` s, polling
    ``RTM_GETROUTE``) until a lookup of the address resolves to a local route, for both
    families (IPv4's is there at once: one extra netlink round trip).
    """
    try:
        iface = parse_interface(cidr)
    except ValueError as e:
        raise ConfigError(f"invalid address {cidr!r} for {dev}: {e}") from None
    rtnetlink(ns).addr_add(
        socket.AF_INET if iface.version == 4 else socket.AF_INET6,
        link_index(ns, dev),
        iface.ip.packed,
        iface.network.prefixlen,
        flags=IFA_F_NODAD if iface.version == 6 else 0,
        what=f"addr add {cidr} dev {dev}",
    )
    if wait > 0 and _is_up(ns, dev):
        wait_local(ns, str(iface.ip), dev, wait)


def _is_up(ns: NetNS, dev: str) -> bool:
    return bool(rtnetlink(ns).link_flags(link_index(ns, dev)) & IFF_UP)


def is_local(ns: NetNS, ip: str, dev: str | None = None) -> bool:
    """Whether a route lookup of ``ip`` in ``ns`` resolves to a local route now."""
    addr = ipaddress.ip_address(ip)
    oif = link_index(ns, dev) if addr.is_link_local and dev is not None else 0
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    return rtnetlink(ns).route_type(family, addr.packed, oif=oif) == RTN_LOCAL


def wait_local(ns: NetNS, ip: str, dev: str | None = None, wait: float = ADDR_WAIT) -> None:
    """Return once ``ip`` resolves to a local route in ``ns``; HarnessError after ``wait`` s."""
    deadline = time.monotonic() + wait
    pause = 0.0002
    while not is_local(ns, ip, dev):
        if time.monotonic() > deadline:
            raise HarnessError(
                f"address {ip} on {dev} is not usable after {wait} s: no local route for it "
                "in table local (is the link up?)"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.01)


def add_link(ns: NetNS, name: str, kind: str = "dummy", addrs: Sequence[str] = ()) -> Link:
    """Create link ``name`` of ``kind``, bring it up and give it ``addrs``.

    Where the kernel lacks ``kind`` (e.g. no CONFIG_DUMMY) and a stand-in exists, the stand-in
    is made and the returned :class:`Link` says so. ``veth`` makes a pair ``name``/``name``-p.
    """
    from pyroute2.netlink.exceptions import NetlinkError

    check_ifname(name)
    if kind not in KINDS:
        raise ConfigError(f"unknown link kind {kind!r} for {name!r}; known: {sorted(KINDS)}")
    for cidr in addrs:  # validate everything before touching the kernel
        try:
            parse_interface(cidr)
        except ValueError as e:
            raise ConfigError(f"invalid address {cidr!r} for link {name!r}: {e}") from None
    made, why = kind, None
    try:
        _create(ns, name, kind)
    except NetlinkError as e:
        if e.code != EOPNOTSUPP or kind not in STAND_INS:
            raise ConfigError(f"cannot create link {name!r} of kind {kind!r}: {e}") from None
        made = STAND_INS[kind]
        why = f"CONFIG_{kind.upper()} missing on {os.uname().release}"
        _create(ns, name, made)
    index = link_index(ns, name)
    ns.ipr.link("set", index=index, state="up")
    if kind == "veth":
        ns.ipr.link("set", index=link_index(ns, f"{name}-p"), state="up")
    link = Link(name, index, made, kind, list(addrs), why)
    for cidr in addrs:
        add_addr(ns, name, cidr)
    links(ns)[name] = link
    return link


def _create(ns: NetNS, name: str, kind: str) -> None:
    if kind == "veth":
        peer = check_ifname(f"{name}-p")
        ns.ipr.link("add", ifname=name, kind="veth", peer=peer)
    elif kind == "vrf":
        ns.ipr.link("add", ifname=name, kind="vrf", vrf_table=10)
    elif kind == "vxlan":
        ns.ipr.link("add", ifname=name, kind="vxlan", vxlan_id=1, vxlan_port=4789)
    elif kind == "macvlan":
        raise ConfigError(f"link kind 'macvlan' needs a parent; create {name!r} by hand")
    else:
        ns.ipr.link("add", ifname=name, kind=kind)


RTPROT_KERNEL = 2  # <linux/rtnetlink.h>: routes the kernel made itself


def _routes_via(ns: NetNS, index: int) -> list[dict[str, object]]:
    """The routes through link ``index`` that somebody added (not the kernel's own)."""
    out = []
    for fam in (socket.AF_INET, socket.AF_INET6):
        for r in ns.ipr.route("dump", family=fam):
            if r.get_attr("RTA_OIF") != index or r["proto"] == RTPROT_KERNEL:
                continue
            out.append(
                {
                    "family": fam,
                    "dst": r.get_attr("RTA_DST") or ("0.0.0.0" if fam == socket.AF_INET else "::"),
                    "dst_len": r["dst_len"],
                    "table": r.get_attr("RTA_TABLE") or r["table"],
                    "type": r["type"],
                    "scope": r["scope"],
                    "proto": r["proto"],
                }
            )
    return out


def rename_link(ns: NetNS, old: str, new: str) -> None:
    """Rename a link, live where the kernel allows it (6.x does), so its routes stay.

    Older kernels (< 6.2) refuse to rename a link that is up (EBUSY): then it is taken
    down, renamed and brought up again, and the routes through it, which going down
    flushes, are put back.
    """
    from pyroute2.netlink.exceptions import NetlinkError

    check_ifname(new)
    index = link_index(ns, old)
    try:
        ns.ipr.link("set", index=index, ifname=new)
    except NetlinkError as e:
        if e.code != errno.EBUSY:
            raise ConfigError(f"cannot rename link {old!r} to {new!r}: {e}") from None
        routes = _routes_via(ns, index)
        ns.ipr.link("set", index=index, state="down")
        ns.ipr.link("set", index=index, ifname=new)
        ns.ipr.link("set", index=index, state="up")
        for route in routes:
            ns.ipr.route("add", oif=index, **route)
    made = links(ns)
    if old in made:
        link = made.pop(old)
        link.name = new
        made[new] = link


def sysctl_path(key: str) -> str:
    if not isinstance(key, str) or not _SYSCTL_KEY.match(key.replace("/", ".")):
        raise SysctlError(
            f"sysctl {key!r} refused: only per-namespace 'net.*' keys may be set "
            "(anything else would change the host)"
        )
    # Interface names may hold dots: accept '/' as the separator too, as sysctl(8) does.
    parts = key.split("/") if "/" in key else key.split(".")
    return "/proc/sys/" + "/".join(parts)


def sysctl(ns: NetNS, key: str, value: str | int | None = None) -> str:
    """Return the current value of ``key`` in the namespace; with ``value``, write it first.

    Unknown keys and refused values raise :class:`SysctlError` naming the key.
    """
    path = sysctl_path(key)
    with ns.enter():  # /proc/sys/net resolves against the opening thread's namespace
        if not os.path.exists(path):
            raise SysctlError(f"unknown sysctl {key!r}: no {path} in this network namespace")
        if value is not None:
            text = str(value)
            try:
                with open(path, "w") as f:
                    f.write(text)
            except OSError as e:
                raise SysctlError(f"sysctl {key} = {text!r} refused: {e.strerror}") from None
        with open(path) as f:
            return f.read().strip()
