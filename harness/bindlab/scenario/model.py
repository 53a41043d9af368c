"""The scenario model: what a scenario file says, as frozen dataclasses (no parsing, no
kernel work). :mod:`bindlab.scenario.load` builds these from TOML; :mod:`bindlab.scenario.run` runs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bindlab.errors import ConfigError
from bindlab.flow import Flow

OK = "OK"  # expect_errno = "OK": every step of the socket succeeds


class ScenarioError(ConfigError):
    """A scenario file that cannot be loaded; the message names file, line, key and fix."""


@dataclass(frozen=True)
class LinkSpec:
    name: str
    kind: str = "dummy"
    addrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class AddrSpec:
    dev: str
    cidr: str


@dataclass(frozen=True)
class RouteSpec:
    prefix: str
    dev: str = "lo"


@dataclass(frozen=True)
class InjectorSpec:
    name: str
    clients: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetupSpec:
    local_routes: tuple[RouteSpec, ...] = ()
    links: tuple[LinkSpec, ...] = ()
    addrs: tuple[AddrSpec, ...] = ()
    injectors: tuple[InjectorSpec, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SocketSpec:
    """One socket: made, optioned, bound, then listening or connected, in file order."""

    label: str
    proto: str = "tcp"
    family: int = 4
    bind: str | None = None
    listen: bool = False
    connect: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    bind_prefix: tuple[str, int] | None = None  # (prefix, port): SO_BINDTOPREFIX emulation
    expect_errno: str | None = None
    expect_port: tuple[int, int] | None = None
    bind_port_of: str | None = None  # bind to the port this earlier socket got
    line: int | None = None
    # the loader's parse of ``bind`` and ``connect``: what the runner hands the kernel
    bind_sockaddr: tuple[Any, ...] | None = field(default=None, compare=False)
    connect_sockaddr: tuple[Any, ...] | None = field(default=None, compare=False)

    @property
    def checked(self) -> bool:
        return self.expect_errno is not None or self.expect_port is not None

    @property
    def step(self) -> str:
        """The socket's steps as one name, e.g. ``c3: tcp bind 192.0.2.10:0 listen``."""
        parts = [f"{self.label}: {self.proto}"]
        if self.bind is not None:
            where = self.bind
            if self.bind_port_of is not None:  # IP:0 -> IP:<port of a>
                where = f"{where.rpartition(':')[0]}:<port of {self.bind_port_of}>"
            parts.append(f"bind {where}")
        if self.bind_prefix is not None:
            net, port = self.bind_prefix
            parts.append(f"bind_prefix {f'[{net}]' if ':' in net else net}:{port}")
        if self.listen:
            parts.append("listen")
        if self.connect is not None:
            parts.append(f"connect {self.connect}")
        return " ".join(parts)

    @property
    def expected(self) -> str:
        if self.expect_port is not None:
            lo, hi = self.expect_port
            return f"port {lo}" if lo == hi else f"port {lo}-{hi}"
        return self.expect_errno or OK


@dataclass(frozen=True)
class DispatchSpec:
    """A sk_lookup dispatch binding: (proto, prefix, port or any) -> labelled socket."""

    label: str
    prefix: str
    proto: str = "tcp"
    port: int | None = None  # None: any port
    line: int | None = None


@dataclass(frozen=True)
class ProgramSpec:
    """A real program run inside the namespace (``[[program]]``); its sockets get labels
    ``LABEL:ADDR:PORT`` (see :mod:`bindlab.programs`)."""

    label: str
    argv: tuple[str, ...]
    files: tuple[tuple[str, str], ...] = ()  # written to the program's dir; {dir} is its path
    wait_for: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # derived label -> label in verdicts
    timeout: float = 10.0
    package: str = ""  # the Debian package that installs argv[0], named in the skip reason
    line: int | None = None


@dataclass(frozen=True)
class ExpectSpec:
    """A flow and the verdicts it may get (several when any member of a group is right)."""

    flow: Flow
    verdicts: tuple[str, ...]
    line: int | None = None

    @property
    def expected(self) -> str:
        return "|".join(self.verdicts)


@dataclass(frozen=True)
class Scenario:
    path: str
    name: str
    description: str = ""
    claim: str = ""
    source: str = ""
    requires: tuple[str, ...] = ()
    evidence: bool = False  # record the kernel's evidence beside every verdict
    setup: SetupSpec = field(default_factory=SetupSpec)
    sockets: tuple[SocketSpec, ...] = ()
    dispatch: tuple[DispatchSpec, ...] = ()
    expect: tuple[ExpectSpec, ...] = ()
    programs: tuple[ProgramSpec, ...] = ()
    families: tuple[str, ...] = ()  # declared variants (bindlab.families); () = as written
    family: str | None = None  # which variant this is (scenario.variants), None = as written

    @property
    def needs_dispatcher(self) -> bool:
        return bool(self.dispatch) or any(s.bind_prefix for s in self.sockets)

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The local-route prefixes: the address space this scenario hands out."""
        return tuple(r.prefix for r in self.setup.local_routes)
