"""A family-neutral scenario (``families = [...]``, addresses written once in IPv4 form) as
each of its variants: the loaded :class:`Scenario` with its addresses mapped by
:mod:`bindlab.families`. Lines and labels stay those of the file; no kernel work here."""

from __future__ import annotations

from dataclasses import replace

from bindlab.errors import ConfigError
from bindlab.families import Family, family
from bindlab.flow import Flow
from bindlab.scenario.model import Scenario, ScenarioError, SetupSpec, SocketSpec

IPV6_SYSCTLS = (("net.ipv6.ip_nonlocal_bind", "1"),)  # IPv6 binds inside a local route


def variants(sc: Scenario) -> list[Scenario]:
    """``sc`` once per declared family (``[sc]`` itself when it declares none)."""
    if not sc.families:
        return [sc]
    return [variant(sc, name) for name in sc.families]


def variant(sc: Scenario, name: str) -> Scenario:
    """``sc`` as family ``name``; a ScenarioError names the address that cannot be mapped."""
    fam = family(name)
    if sc.programs and fam.name != "ipv4":
        raise ScenarioError(
            f"{sc.path}: [[program]] has no {name} variant (its config spells its addresses): "
            'declare families = ["ipv4"] or none'
        )
    try:
        return replace(
            sc,
            name=f"{sc.name}[{name}]",
            family=name,
            setup=_setup(sc.setup, fam),
            sockets=tuple(_socket(s, fam) for s in sc.sockets),
            dispatch=tuple(
                replace(d, prefix=fam.prefix(d.prefix)) if fam.name == "ipv6" else d
                for d in sc.dispatch
            ),
            expect=tuple(replace(e, flow=Flow.parse(fam.flow(str(e.flow)))) for e in sc.expect),
        )
    except ConfigError as e:
        raise ScenarioError(f"{sc.path}: as {name}: {e}") from None


def _setup(s: SetupSpec, fam: Family) -> SetupSpec:
    if fam.name != "ipv6":
        return s
    return replace(
        s,
        local_routes=tuple(replace(r, prefix=fam.prefix(r.prefix)) for r in s.local_routes),
        links=tuple(replace(x, addrs=tuple(map(fam.prefix, x.addrs))) for x in s.links),
        addrs=tuple(replace(a, cidr=fam.prefix(a.cidr)) for a in s.addrs),
        injectors=tuple(replace(i, clients=tuple(map(fam.prefix, i.clients))) for i in s.injectors),
        sysctls=s.sysctls + tuple(kv for kv in IPV6_SYSCTLS if kv[0] not in dict(s.sysctls)),
    )


def _socket(s: SocketSpec, fam: Family) -> SocketSpec:
    if fam.name == "ipv4":
        return s
    if s.bind_prefix is not None:
        if fam.name != "ipv6":
            raise ConfigError(f"socket {s.label!r}: bind_prefix has no {fam.name} variant")
        prefix, port = s.bind_prefix
        s = replace(s, bind_prefix=(fam.prefix(prefix), port))
    out = replace(s, family=6)
    if s.bind is not None:
        out = replace(out, bind=fam.endpoint(s.bind), bind_sockaddr=fam.sockaddr(s.bind))
    if s.connect is not None:
        # a peer outside: its packets are IPv4 in the v4mapped variant, so address it mapped
        out = replace(
            out, connect=fam.endpoint(s.connect), connect_sockaddr=fam.sockaddr(s.connect)
        )
    if fam.name == "v4mapped" and dict(s.options).get("v6only"):
        raise ConfigError(f"socket {s.label!r}: v6only = true cannot receive IPv4 flows")
    return out


__all__ = ["variant", "variants"]
