"""Address families of one scenario: write addresses once (IPv4), run as IPv4, IPv6 and
IPv4-mapped.

A scenario or test written with IPv4 addresses runs in three variants:

``ipv4``
    as written.
``ipv6``
    every IPv4 address ``a.b.c.d`` becomes ``2001:db8::a.b.c.d`` (the IPv4 bits in the
    low 32 bits of the documentation prefix ``2001:db8::/96``), a prefix ``/n`` becomes
    ``/96+n``; ``0.0.0.0`` is ``::`` and ``127.0.0.1`` is ``::1``. Sockets and flows are
    IPv6. So ``192.0.2.0/24`` <-> ``2001:db8::c000:200/120``.
``v4mapped``
    the flows, routes and bindings stay IPv4; the sockets are dual-stack IPv6 sockets
    bound to ``::ffff:a.b.c.d`` (``0.0.0.0`` becomes ``::``), so they receive the IPv4
    flows as IPv4-mapped peers. This is where kernels have differed (the bind of
    ``::ffff:0.0.0.0`` changed between 6.1 and 6.18).

Example::

    fam = FAMILY["ipv6"]
    fam.endpoint("192.0.2.1:80")   # '[2001:db8::c000:201]:80'
    fam.flow("tcp 198.18.0.1:1000 -> 192.0.2.1:80")
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from bindlab.errors import ConfigError

FAMILIES = ("ipv4", "ipv6", "v4mapped")
EMBED = ipaddress.IPv6Network("2001:db8::/96")  # where IPv4 addresses go in the ipv6 variant
_EMBED_INT = int(EMBED.network_address)


def _v4(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not an IP address") from None
    if ip.version != 4:
        raise ConfigError(
            f"{what} {text!r}: a family-neutral scenario writes addresses once, in IPv4 "
            "form (each variant maps them; see bindlab.families)"
        )
    return ip


def embed(ip: str) -> str:
    """The ipv6 variant of IPv4 address ``ip``: 0.0.0.0 -> ::, 127.0.0.1 -> ::1, else
    ``2001:db8::a.b.c.d``."""
    v4 = _v4(ip, "address")
    if v4 == ipaddress.IPv4Address("0.0.0.0"):
        return "::"
    if v4.is_loopback:
        return "::1"
    return str(ipaddress.IPv6Address(_EMBED_INT | int(v4)))


def _split(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if host.startswith("["):
        _v4(host.strip("[]"), what)  # raises: written once, in IPv4 form
    if not sep or not port.isdigit():
        raise ConfigError(f"{what} {text!r}: expected IPv4:PORT")
    return host, int(port)


@dataclass(frozen=True)
class Family:
    """One variant: how a written (IPv4) address becomes this variant's address."""

    name: str

    @property
    def socket_family(self) -> int:
        """The socket family of this variant's sockets: 4 or 6."""
        return 4 if self.name == "ipv4" else 6

    @property
    def flow_version(self) -> int:
        """The IP version of this variant's packets: 4 or 6."""
        return 6 if self.name == "ipv6" else 4

    def ip(self, ip: str) -> str:
        """A socket's address (what ``bind``/``connect`` take)."""
        v4 = _v4(ip, "address")
        if self.name == "ipv6":
            return embed(ip)
        if self.name == "v4mapped":
            return "::" if int(v4) == 0 else f"::ffff:{v4}"
        return str(v4)

    def flow_ip(self, ip: str) -> str:
        """An address in a flow (what the packets carry)."""
        return embed(ip) if self.name == "ipv6" else str(_v4(ip, "address"))

    def endpoint(self, text: str) -> str:
        """A socket's ``IP:PORT`` in this variant (``[IPv6]:PORT`` where it is IPv6)."""
        host, port = _split(text, "socket address")
        ip = self.ip(host)
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

    def sockaddr(self, text: str) -> tuple[str, int]:
        """A socket's ``(ip, port)`` in this variant."""
        host, port = _split(text, "socket address")
        return self.ip(host), port

    def prefix(self, text: str) -> str:
        """A route or binding prefix (``a.b.c.d/n``) in this variant: IPv4 but for ipv6."""
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ConfigError(f"prefix {text!r} is not an IP prefix") from None
        _v4(str(net.network_address), "prefix")
        if self.name != "ipv6":
            return text
        iface = ipaddress.ip_interface(text)
        if iface.ip.is_loopback:
            return "::1/128"
        if net.prefixlen == 0:
            return "::/0"
        return f"{embed(str(iface.ip))}/{96 + net.prefixlen}"

    def flow(self, text: str) -> str:
        """A flow string (``PROTO SRC:PORT -> DST:PORT [dev IF]``) in this variant."""
        if self.name != "ipv6":
            return text
        head, _arrow, rest = text.partition("->")
        proto, _, src = head.strip().partition(" ")
        dst, _, dev = rest.strip().partition(" ")

        def ep(t: str) -> str:
            host, port = _split(t.strip(), "flow endpoint")
            return f"[{embed(host)}]:{port}"

        out = f"{proto} {ep(src)} -> {ep(dst)}"
        return f"{out} {dev}" if dev else out

    def __str__(self) -> str:
        return self.name


FAMILY = {name: Family(name) for name in FAMILIES}


def family(name: str) -> Family:
    """The :class:`Family` called ``name`` (one of :data:`FAMILIES`)."""
    if name not in FAMILY:
        raise ConfigError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILY[name]
