"""Scenario files (TOML): parse and check them into dataclasses; no kernel work here.

A scenario is one namespace setup, the sockets made in it (in file order), optional sk_lookup
dispatch bindings, and what is expected: a verdict per flow, an errno or port per socket.
``bindlab/data/schema.json`` documents the format. Every problem is one
:class:`ScenarioError` (located by :class:`~bindlab.scenario.check.Checker`) naming the file, the line (where it can be found) and the key path::

    reuseport.toml:14: socket[1].bind: bad socket address '192.0.2.1:99999': ...
"""

from __future__ import annotations

import difflib
import errno as _errno
from collections import Counter
from pathlib import Path
from typing import Any

from bindlab import features
from bindlab.errors import FLOW_SYNTAX, ConfigError, FlowSyntaxError
from bindlab.families import FAMILIES
from bindlab.flow import RESERVED_VERDICTS, Flow, parse_interface, parse_network
from bindlab.inject import DEFAULT_INJECTOR
from bindlab.net import KINDS, check_ifname, sysctl_path
from bindlab.programs import wanted
from bindlab.scenario import bounds
from bindlab.scenario.check import (
    REQUIRED,
    Checker,
    Conv,
    Spec,
    bool_value,
    choice,
    kind_of,
    list_of,
    one_line,
    parsed,
    raw,
    str_value,
    table,
)
from bindlab.scenario.model import (
    OK,
    AddrSpec,
    DispatchSpec,
    ExpectSpec,
    InjectorSpec,
    LinkSpec,
    ProgramSpec,
    RouteSpec,
    Scenario,
    ScenarioError,
    SetupSpec,
    SocketSpec,
)
from bindlab.scenario.variants import variants
from bindlab.sockets import OPTIONS, check_label, parse_addr


def _endpoint(text: str) -> tuple[str, int, tuple[Any, ...]]:
    """``IP:PORT`` -> (text, family 4 or 6, the socket address the runner binds to)."""
    family, sockaddr = parse_addr(text)
    return text, 6 if family == 10 else 4, sockaddr


def _net_port(text: str) -> tuple[tuple[str, int], int]:
    """``PREFIX:PORT`` (``[PREFIX]:PORT`` for IPv6) -> ((prefix, port), family)."""
    net, sep, port = text[1:].partition("]:") if text.startswith("[") else text.rpartition(":")
    if not sep or not 0 < len(port) <= 5 or not port.isascii() or not port.isdigit():
        raise ValueError(f"bad prefix bind {text!r}: needs a port 1-65535 after ':'")
    if not 0 < int(port) < 65536:
        raise ValueError(f"bad prefix bind {text!r}: needs a port 1-65535 after ':'")
    prefix = _net(net)
    if text.startswith("[") != (":" in prefix):
        raise ValueError(f"bad prefix bind {text!r}: IPv6 goes in brackets, IPv4 does not")
    return (prefix, int(port)), 6 if ":" in prefix else 4


def _net(text: str) -> str:
    try:
        return str(parse_network(text, strict=True))
    except ValueError as e:
        raise ValueError(f"bad prefix {text!r}: {e}") from None


def _name(text: str) -> str:
    if not text or not text.isprintable() or len(text) > 100:
        raise ValueError(f"bad name {one_line(text, 60)!r}: 1-100 printable characters, one line")
    return text


_prefix = parsed(_net, "a prefix like '192.0.2.0/24' (host bits clear)")
_iface = parsed(lambda t: str(parse_interface(t)), "an address like '203.0.113.1/24'")
_ifname = parsed(check_ifname, "an interface name")
_addr = parsed(_endpoint, "'IP:PORT' or '[IPv6]:PORT', port 0-65535")


def _route(c: Checker, v: Any, where: str) -> RouteSpec:
    if isinstance(v, str):
        return RouteSpec(_prefix(c, v, where))
    return RouteSpec(**c.record(v, where, {"prefix": (_prefix, REQUIRED), "dev": (_ifname, "lo")}))


def _sysctls(c: Checker, v: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, dict):
        raise c.fail(where, f"expected a table of 'net.*' keys, got {kind_of(v)}")
    for k, x in v.items():
        parsed(sysctl_path, "a per-namespace 'net.*' key")(c, k, f'{where}."{k}"')
        if isinstance(x, bool) or not isinstance(x, str | int):
            raise c.fail(f'{where}."{k}"', f"expected a string or integer, got {kind_of(x)}")
    return tuple((k, str(x)) for k, x in v.items())


def _options(c: Checker, v: Any, where: str) -> tuple[tuple[str, Any], ...]:
    def option(name: str) -> Conv:
        def conv(c: Checker, x: Any, at: str) -> Any:
            if name == "bindtoifindex" and isinstance(x, str):
                return _ifname(c, x, at)  # a link name, resolved to its index when run
            try:
                OPTIONS[name].encode(x)
            except ConfigError as e:
                raise c.fail(at, str(e)) from None
            return tuple(x) if isinstance(x, list) else x

        return conv

    opts = c.record(v, where, {n: (option(n), None) for n in OPTIONS})
    return tuple((k, x) for k, x in opts.items() if k in v)


def _errno_name(c: Checker, v: Any, where: str) -> str:
    names = set(_errno.errorcode.values()) | {OK}
    if not isinstance(v, str) or v not in names:
        near = difflib.get_close_matches(str(v), sorted(names), 1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise c.fail(where, f"{v!r} is not an errno name like 'EADDRINUSE', nor 'OK'{hint}")
    return v


def _port_range(c: Checker, v: Any, where: str) -> tuple[int, int]:
    p = v if isinstance(v, list) else [v, v]
    ints = len(p) == 2 and all(
        isinstance(x, int) and not isinstance(x, bool) and 0 < x < 65536 for x in p
    )
    if not ints or p[0] > p[1]:
        raise c.fail(where, f"expected a port 1-65535 or [lo, hi] with lo <= hi, got {kind_of(v)}")
    return p[0], p[1]


def _port_or_any(c: Checker, v: Any, where: str) -> int | None:
    if v == "any":
        return None
    return _port_range(c, v, where)[0] if isinstance(v, int) else choice("any")(c, v, where)


_label = parsed(check_label, "a word naming the socket in verdicts")


PROTO = choice("tcp", "udp")
LINK: Spec = {
    "name": (_ifname, REQUIRED),
    "kind": (choice(*sorted(KINDS)), "dummy"),
    "addrs": (list_of(_iface), ()),
}
ADDR: Spec = {"dev": (_ifname, REQUIRED), "cidr": (_iface, REQUIRED)}
INJECTOR: Spec = {"name": (_ifname, REQUIRED), "clients": (list_of(_prefix), ())}
SETUP: Spec = {
    "local_routes": (list_of(_route), ()), "links": (list_of(table(LinkSpec, LINK)), ()),
    "addrs": (list_of(table(AddrSpec, ADDR)), ()), "injectors": (list_of(table(InjectorSpec, INJECTOR)), ()),
    "sysctls": (_sysctls, ()),
}  # fmt: skip
SOCKET: Spec = {
    "label": (_label, REQUIRED), "proto": (PROTO, "tcp"), "family": (choice(4, 6), None),
    "bind": (_addr, None), "listen": (bool_value, None), "connect": (_addr, None),
    "options": (_options, ()), "bind_prefix": (parsed(_net_port, "'PREFIX:PORT' or '[PREFIX]:PORT'"), None),
    "expect_errno": (_errno_name, None), "expect_port": (_port_range, None),
    "bind_port_of": (str_value, None),
}  # fmt: skip
DISPATCH: Spec = {
    "label": (str_value, REQUIRED), "prefix": (_prefix, REQUIRED), "proto": (PROTO, "tcp"),
    "port": (_port_or_any, None),
}  # fmt: skip
TOP: Spec = {
    "name": (parsed(_name, "the scenario's name"), None), "description": (str_value, ""), "claim": (str_value, ""), "source": (str_value, ""),
    "requires": (list_of(choice(*features.PROBES)), ()), "families": (list_of(choice(*FAMILIES)), ()),
    "evidence": (bool_value, False),
    "setup": (table(SetupSpec, SETUP), SetupSpec()),
    "socket": (list_of(raw), ()), "dispatch": (list_of(raw), ()), "expect": (raw, {}),
    "program": (list_of(raw), ()),
}  # fmt: skip


def _strings(
    c: Checker, v: Any, where: str, value: Conv = str_value
) -> tuple[tuple[str, Any], ...]:
    if not isinstance(v, dict):
        raise c.fail(where, f"expected a table, got {kind_of(v)}")
    return tuple((k, value(c, x, f'{where}."{k}"')) for k, x in v.items())


def _file_name(c: Checker, v: Any, where: str) -> str:
    if "/" in v or v in ("", ".", ".."):
        raise c.fail(where, f"{v!r}: a plain file name (it goes in the program's directory)")
    return v


def _argv(c: Checker, v: Any, where: str) -> tuple[str, ...]:
    argv = list_of(str_value)(c, v, where)
    if not argv:
        raise c.fail(where, "an empty command line")
    return argv


def _seconds(c: Checker, v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 600:
        raise c.fail(where, f"expected seconds (0-600], got {kind_of(v)}")
    return float(v)


def _wait_spec(text: str) -> str:
    wanted([text])
    return text


PROGRAM: Spec = {
    "label": (_label, REQUIRED), "argv": (_argv, REQUIRED),
    "files": (lambda c, v, w: tuple((_file_name(c, k, w), x) for k, x in _strings(c, v, w)), ()),
    "wait_for": (list_of(parsed(_wait_spec, "'tcp IP:PORT' or 'udp IP:PORT'")), ()),
    "labels": (lambda c, v, w: _strings(c, v, w, _label), ()),
    "timeout": (_seconds, 10.0), "package": (str_value, ""),
}  # fmt: skip


def _programs(c: Checker, tables: list[Any], taken: list[str]) -> tuple[ProgramSpec, ...]:
    """The ``[[program]]`` tables; their labels prefix their sockets' (``nginx:...``)."""
    out = []
    for i, d in enumerate(tables):
        p = ProgramSpec(**c.record(d, f"program[{i}]", PROGRAM), line=c.header_line("program", i))
        if p.label in taken:
            raise c.fail(f"program[{i}].label", f"label {p.label!r} is used already")
        taken.append(p.label)
        out.append(p)
    return tuple(out)


def _socket(c: Checker, i: int, d: dict[str, Any]) -> SocketSpec:
    """Check one ``[[socket]]`` table and how its keys go together."""
    at = f"socket[{i}]"
    s = c.record(d, at, SOCKET)
    family = s["family"]
    if s["bind_prefix"] and (s["bind"] or s["connect"]):
        raise c.fail(f"{at}.bind_prefix", "a prefix-bound socket has no 'bind' or 'connect'")
    sockaddrs: dict[str, Any] = {}
    for key in ("bind", "bind_prefix", "connect"):
        if s[key] is None:
            continue
        if family is not None and s[key][1] != family:
            raise c.fail(f"{at}.{key}", f"an IPv{s[key][1]} address on a family = {family} socket")
        if key != "bind_prefix":
            sockaddrs[f"{key}_sockaddr"] = s[key][2]
        family, s[key] = s[key][1], s[key][0]
    if family is None:
        raise c.fail(at, "needs 'bind', 'bind_prefix', 'connect' or 'family' (4 or 6)")
    if s["listen"] is None:  # by default a TCP socket listens; a prefix bind listens by itself
        s["listen"] = s["proto"] == "tcp" and s["connect"] is None and s["bind_prefix"] is None
    if s["listen"] and (s["proto"] == "udp" or s["connect"] is not None or s["bind"] is None):
        raise c.fail(
            f"{at}.listen" if "listen" in d else at,
            "only a bound, unconnected TCP socket can listen",
        )
    if s["expect_errno"] and s["expect_port"]:
        raise c.fail(at, "give 'expect_errno' or 'expect_port', not both")
    if s["bind_port_of"] is not None and (s["bind"] is None or sockaddrs["bind_sockaddr"][1]):
        raise c.fail(
            f"{at}.bind_port_of",
            "needs 'bind' with port 0: the port is the one the named socket got",
        )
    return SocketSpec(**{**s, **sockaddrs, "family": family, "line": c.header_line("socket", i)})


def _check_links(c: Checker, sockets: tuple[SocketSpec, ...], setup: SetupSpec) -> None:
    """A link named by ``bindtoifindex`` must be one the scenario has (its index is looked up)."""
    known = {"lo", DEFAULT_INJECTOR, *(i.name for i in setup.injectors)}
    for link in setup.links:
        known.update((link.name, f"{link.name}-p") if link.kind == "veth" else (link.name,))
    for i, sock in enumerate(sockets):
        name = dict(sock.options).get("bindtoifindex")
        if isinstance(name, str) and name not in known:
            raise c.fail(
                f"socket[{i}].options",
                f"bindtoifindex = {name!r} names no link of this scenario; "
                f"known: {', '.join(sorted(known))} (or give an ifindex number)",
            )


def _expectations(
    c: Checker, d: Any, labels: set[str], injectors: set[str], programs: tuple[str, ...] = ()
) -> tuple[ExpectSpec, ...]:
    if not isinstance(d, dict):
        raise c.fail("expect", f'expected a table of "FLOW" = "VERDICT" rows, got {kind_of(d)}')
    known = sorted(labels) + sorted(RESERVED_VERDICTS)
    out: dict[Flow, ExpectSpec] = {}
    for text, v in d.items():
        at = f'expect."{text}"'
        try:
            flow = Flow.parse(text)
        except FlowSyntaxError as e:  # the key path quotes the flow already: say why only
            raise c.fail(at, f"bad flow: {e.reason} (expected {FLOW_SYNTAX})") from None
        verdicts = v if isinstance(v, list) and v else [v]
        for x in verdicts:
            program_label = isinstance(x, str) and x.startswith(tuple(f"{p}:" for p in programs))
            if x not in known and not program_label:
                raise c.fail(at, f"{x!r} names no socket; expected one of: {', '.join(known)}")
        if flow.dev is not None and flow.dev not in injectors:
            raise c.fail(at, f"dev {flow.dev!r} is not an injector; add it to setup.injectors")
        if flow in out:
            raise c.fail(at, f"the same flow as {str(out[flow].flow)!r}")
        out[flow] = ExpectSpec(flow, tuple(verdicts), c.locate(at))
    return tuple(out.values())


def load_text(text: str | bytes, path: str = "<scenario>") -> Scenario:
    """Parse scenario TOML ``text`` (from ``path``, named in messages) into a :class:`Scenario`."""
    bounds.check_size(text, path)
    if isinstance(text, bytes):
        data_bytes = text
        try:
            text = data_bytes.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data_bytes.count(b"\n", 0, e.start) + 1
            raise ScenarioError(f"{path}:{line}: not UTF-8 text: {e}") from None
    c = Checker(path, text)
    document = bounds.parse(text, path)
    bounds.check_data(document, c.fail)
    data = c.record(document, "", TOP)
    setup: SetupSpec = data["setup"]
    names = [*(x.name for x in setup.links), *(x.name for x in setup.injectors)]
    counts = Counter(names)
    if dup := next((n for n in names if counts[n] > 1 or n == DEFAULT_INJECTOR), None):
        raise c.fail(
            "setup", f"link/injector name {dup!r} is taken (twice, or the default injector's)"
        )
    sockets = tuple(_socket(c, i, s) for i, s in enumerate(data["socket"]))
    _check_links(c, sockets, setup)
    labels: dict[str, int] = {}
    for i, sock in enumerate(sockets):
        if labels.setdefault(sock.label, i) != i:
            raise c.fail(
                f"socket[{i}].label", f"label {sock.label!r} is used by another socket already"
            )
    for i, spec in enumerate(sockets):
        if spec.bind_port_of is not None and labels.get(spec.bind_port_of, i) >= i:
            choice(*list(labels)[:i])(c, spec.bind_port_of, f"socket[{i}].bind_port_of")
    dispatch = []
    for i, b in enumerate(data["dispatch"]):
        binding = DispatchSpec(
            **c.record(b, f"dispatch[{i}]", DISPATCH), line=c.header_line("dispatch", i)
        )
        if binding.label not in labels:
            choice(*labels)(c, binding.label, f"dispatch[{i}].label")
        dispatch.append(binding)
    programs = _programs(c, data["program"], list(labels))
    verdicts = {*labels, *(lbl for p in programs for _, lbl in p.labels)}
    expect = _expectations(
        c, data["expect"], verdicts, {i.name for i in setup.injectors},
        tuple(p.label for p in programs),
    )  # fmt: skip
    if not expect and not any(s.checked for s in sockets):
        raise c.fail(
            "", "nothing to check: add an [expect] table or a socket with expect_errno/expect_port"
        )
    top = {
        k: data[k] for k in ("description", "claim", "source", "requires", "families", "evidence")
    }
    name = data["name"] or Path(path).stem
    if len(set(top["families"])) != len(top["families"]):
        raise c.fail("families", "a family is named twice")
    sc = Scenario(
        path, name, setup=setup, sockets=sockets, dispatch=tuple(dispatch), expect=expect,
        programs=programs, **top,
    )  # fmt: skip
    variants(sc)  # every address maps to every declared family (or the error names it)
    return sc


def load(path: str | Path, shown: str | None = None) -> Scenario:
    """Read and parse one scenario file (named ``shown`` in messages, if given)."""
    shown = shown or str(path)
    try:
        with open(path, "rb") as f:  # read one byte past the bound, never a whole huge file
            data = f.read(bounds.MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ScenarioError(f"{shown}: cannot read: {e.strerror}") from None
    return load_text(data, shown)
