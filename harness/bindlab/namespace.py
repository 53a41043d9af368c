"""The :class:`Namespace` facade: one object to configure a namespace, open labelled sockets
in it and probe which of them receives each flow.

It sits above the modules it delegates to (:mod:`bindlab.net`, :mod:`bindlab.sockets`,
:mod:`bindlab.inject`, :mod:`bindlab.probe`, :mod:`bindlab.bpf`); they take the
:class:`~bindlab.netns.NetNS` core as an argument and never reach back up here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from socket import socket as Socket
from typing import Any

from bindlab import inject, net, probe, programs, sockets, sockopts
from bindlab.bpf.dispatcher import Dispatcher, sk_lookup
from bindlab.bpf.query import Attached, attached
from bindlab.flow import Flow
from bindlab.inject import DEFAULT_INJECTOR, Injector
from bindlab.net import Link
from bindlab.netns import NetNS
from bindlab.programs import Program


class Namespace(NetNS):
    """A network namespace made by this process; closing it releases everything made in it.

    Example::

        with Namespace() as ns:
            ns.add_local_route("192.0.2.0/24")
            ns.tcp_listener("192.0.2.1:80", label="web")
            assert ns.probe(["tcp 198.18.0.1:1000 -> 192.0.2.1:80"]) == {...: "web"}
    """

    # -- links, addresses, routes, sysctls ---------------------------------------------------

    def add_local_route(self, prefix: str, dev: str = "lo") -> None:
        """``ip route add local PREFIX dev DEV`` (scope host), IPv4 or IPv6."""
        net.add_local_route(self, prefix, dev)

    def add_link(self, name: str, kind: str = "dummy", addrs: Sequence[str] = ()) -> Link:
        """Create a link (a stand-in kind if the kernel lacks ``kind``), up, with addresses."""
        return net.add_link(self, name, kind, addrs)

    def add_addr(self, dev: str, cidr: str) -> None:
        """Add an address (IPv6 with ``nodad``) to ``dev``; returns once it is usable
        (its local route is in; on a link that is up)."""
        net.add_addr(self, dev, cidr)

    def is_local(self, ip: str) -> bool:
        """Whether a route lookup of ``ip`` resolves to a local route now."""
        return net.is_local(self, ip)

    def sysctl(self, key: str, value: str | int | None = None) -> str:
        """Read (and with ``value``, write) a ``net.*`` sysctl of this namespace."""
        return net.sysctl(self, key, value)

    def link_index(self, name: str) -> int:
        """The ifindex of link ``name`` (a ``ConfigError`` naming it if there is none)."""
        return net.link_index(self, name)

    @property
    def links(self) -> dict[str, Link]:
        """The links made by :meth:`add_link`, by name."""
        return net.links(self)

    # -- sockets ------------------------------------------------------------------------------

    def socket(self, proto: str = "tcp", family: int | str = 4, **opts: Any) -> Socket:
        """A socket made inside the namespace (``tcp``, ``udp``, ``mptcp``, ``sctp``; family
        4 or 6), with typed options applied. ``FeatureMissing`` if the kernel lacks ``proto``.
        Its ``bind()``/``connect()`` errors say why (holder of a port, IPv6 local-route binds)."""
        return sockets.make_socket(self, proto, family, **opts)

    def set_option(self, sock: Socket, name: str, value: Any) -> None:
        """Set one typed option (``reuseport``, ``v6only``, ``local_port_range``...) on ``sock``."""
        sockopts.set_option(sock, name, value)

    def get_option(self, sock: Socket, name: str) -> Any:
        """Read one typed option back as the value :meth:`set_option` takes."""
        return sockopts.get_option(sock, name)

    def bind_errno(
        self,
        addr: str,
        proto: str = "tcp",
        label: str | None = None,
        listen: bool = False,
        **opts: Any,
    ) -> str | None:
        """Bind a new socket to ``addr``: None if it worked (the socket stays, labelled
        ``label`` if given), else the errno name (``"EADDRINUSE"``). One conflict-table row."""
        return sockets.bind_errno(self, addr, proto, label, listen, **opts)

    def tcp_listener(self, addr: str, label: str, **opts: Any) -> Socket:
        """A labelled TCP listener bound to ``addr`` (``IP:PORT``, ``[IPv6]:PORT``)."""
        return sockets.tcp_listener(self, addr, label, **opts)

    def udp_socket(self, addr: str, label: str, connect: str | None = None, **opts: Any) -> Socket:
        """A labelled UDP socket bound to ``addr``, optionally connected to ``connect``."""
        if connect is not None:
            self.injector  # noqa: B018 - its default routes make outside peers reachable
        return sockets.udp_socket(self, addr, label, connect=connect, **opts)

    def server(self, proto: str, addr: str, label: str, **opts: Any) -> Socket:
        """A labelled TCP listener (``proto="tcp"``) or UDP socket (``"udp"``) on ``addr``."""
        if proto == "udp" and opts.get("connect") is not None:
            self.injector  # noqa: B018
        return sockets.server(self, proto, addr, label, **opts)

    def label(self, sock: Socket, label: str) -> Socket:
        """Make any socket count in verdicts under ``label``."""
        return sockets.label_socket(self, sock, label)

    @property
    def sockets(self) -> dict[int, tuple[str, Socket]]:
        """``{fd: (label, socket)}`` of the labelled sockets."""
        return sockets.labels(self)

    # -- programs -----------------------------------------------------------------------------

    def spawn(self, argv: Sequence[str], label: str, **kw: Any) -> Program:
        """Run a real program inside the namespace and label the sockets it binds
        (``nginx:192.0.2.10:80``); see :func:`bindlab.programs.spawn`."""
        return programs.spawn(self, argv, label, **kw)

    @property
    def programs(self) -> list[Program]:
        """The programs spawned here, in order."""
        return programs.programs(self)

    # -- injection and probes -----------------------------------------------------------------

    @property
    def injector(self) -> Injector:
        """The default TUN injector (created on first use) that owns the default routes."""
        inj = inject.injectors(self).get(DEFAULT_INJECTOR)
        if inj is None:
            inj = Injector(self, DEFAULT_INJECTOR, default_routes=True)
        return inj

    def add_injector(self, name: str, clients: Sequence[str] = ()) -> Injector:
        """An extra TUN "link" to inject flows on (``Flow(... dev=name)``)."""
        self.injector  # noqa: B018 - the default one owns the default routes; make it first
        return Injector(self, name, clients=clients)

    @property
    def injectors(self) -> dict[str, Injector]:
        """The injectors made here, by name."""
        return inject.injectors(self)

    evidence = False  # the default of probe(evidence=...): the plugin's --bindlab-evidence

    def probe(self, flows: Iterable[str | Flow], **kw: Any) -> dict[Any, str]:
        """Inject each flow and return ``{flow: verdict}``; see :func:`bindlab.probe.probe`.

        With ``evidence=True`` (or :attr:`evidence` set), the result also has ``.evidence``."""
        self.injector  # noqa: B018 - the default injector (and its routes) before any flow
        kw.setdefault("evidence", self.evidence)
        return probe.probe(self, flows, **kw)

    def distribution(self, flows: Iterable[str | Flow], **kw: Any) -> dict[str, int]:
        """Count verdicts per label over many flows (for SO_REUSEPORT groups)."""
        self.injector  # noqa: B018
        kw.setdefault("evidence", self.evidence)
        return probe.distribution(self, flows, **kw)

    @property
    def observations(self) -> list[tuple[str, str]]:
        """Every ``(flow, verdict)`` probed here, in order."""
        return probe.observations(self)

    # -- BPF ----------------------------------------------------------------------------------

    def sk_lookup_attached(self) -> list[Attached]:
        """The sk_lookup programs attached here, in run order: program id and name, link
        id, namespace inode (``BPF_PROG_QUERY`` and the kernel's link table)."""
        return attached(self)

    def sk_lookup(self, **kw: Any) -> Dispatcher:
        """This namespace's BPF sk_lookup prefix dispatcher (loaded and attached on first use)."""
        return sk_lookup(self, **kw)
