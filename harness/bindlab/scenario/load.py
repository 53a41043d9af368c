"""Scenario files (TOML): parse and check them into dataclasses; no kernel work here.

A scenario is one namespace setup, the sockets made in it (in file order), optional sk_lookup
dispatch bindings, and what is expected: a verdict per flow, an errno or port per socket.
``fixtures/scenarios/schema.json`` documents the format. Every problem is one
:class:`ScenarioError` naming the file, the line (where it can be found) and the key path::

    reuseport.toml:14: socket[1].bind: bad socket address '192.0.2.1:99999': ...
"""

from __future__ import annotations

import difflib
import errno as _errno
import re
from collections import Counter
from collections.abc import Callable
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

REQUIRED = object()


class _Checker:
    """Turns each problem into a ScenarioError located by line (best effort) and key path."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self._headers: dict[str, list[int]] = {}
        self._quoted: dict[str, int] | None = None

    def fail(self, where: str, problem: str) -> ScenarioError:
        """The error for ``problem`` at key path ``where``: one line, of bounded length."""
        line = self.locate(where)
        at = f"{self.path}:{line}" if line else self.path
        problem = _one_line(problem, 300)
        return ScenarioError(
            f"{at}: {_one_line(where, 120)}: {problem}" if where else f"{at}: {problem}"
        )

    def header_line(self, table: str, index: int) -> int | None:
        """The line of the ``index``-th ``[[table]]`` header, if there is one."""
        if table not in self._headers:
            pat = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]")
            self._headers[table] = [n for n, ln in enumerate(self.lines, 1) if pat.match(ln)]
        hits = self._headers[table]
        return hits[index] if index < len(hits) else None

    def key_line(self, key: str, head: int) -> int | None:
        """The line assigning ``key`` in the table whose header is on line ``head`` (0: top)."""
        pat = re.compile(rf'^\s*"?{re.escape(key)}"?\s*=')
        for n in range(head, len(self.lines)):
            if self.lines[n].lstrip().startswith("["):
                break
            if pat.match(self.lines[n]):
                return n + 1
        return head or None

    def any_key_line(self, key: str) -> int | None:
        """The first line assigning ``key`` (bare or quoted) anywhere in the file."""
        pat = re.compile(rf'^\s*"?{re.escape(key)}"?\s*=')
        return next((n for n, ln in enumerate(self.lines, 1) if pat.match(ln)), None)

    def locate(self, where: str) -> int | None:
        """The line of a key path such as ``socket[2].bind`` or ``expect."FLOW"``."""
        return self._locate(where) or self._anywhere(where)

    def _anywhere(self, where: str) -> int | None:
        """The first line assigning, or opening a table of, the path (or its first key)."""
        for key in (where, re.split(r"[.\[]", where, maxsplit=1)[0]):
            if key:
                pat = re.compile(rf'^\s*(?:\[\[?\s*)?"?{re.escape(key)}"?\s*[=.\]]')
                if hit := next((n for n, ln in enumerate(self.lines, 1) if pat.match(ln)), None):
                    return hit
        return None

    def _locate(self, where: str) -> int | None:
        if m := re.match(r"^(socket|dispatch|program)\[(\d+)\](?:\.(\w+))?", where):
            head = self.header_line(m[1], int(m[2]))
            return self.key_line(m[3], head) if head and m[3] else head
        if m := re.match(r'^(?:expect|setup\.sysctls)\."(.*)"', where):
            if self._quoted is None:  # every '"KEY" =' line, once: files may hold 10k rows
                pat = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"\s*=')
                found = ((pat.match(ln), n) for n, ln in enumerate(self.lines, 1))
                self._quoted = {}
                for q, n in found:
                    if q:
                        self._quoted.setdefault(q[1], n)
            return self._quoted.get(m[1]) or self.any_key_line(m[1])
        if m := re.match(r"^setup\.(\w+)", where):
            pat = re.compile(r"^\s*\[\s*setup\s*\]")
            return self.key_line(
                m[1], next((n for n, ln in enumerate(self.lines, 1) if pat.match(ln)), 0)
            )
        return self.key_line(m[1], 0) if (m := re.match(r"^(\w+)", where)) else None

    def record(self, d: Any, where: str, spec: Spec) -> dict[str, Any]:
        """Check table ``d`` against ``spec`` (key -> (converter, default or REQUIRED))."""
        if not isinstance(d, dict):
            raise self.fail(where, f"expected a table, got {_kind(d)}")
        at = f"{where}." if where else ""
        for k in d:
            if k not in spec:
                near = difflib.get_close_matches(k, list(spec), 1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise self.fail(
                    f"{at}{k}", f"unknown key {k!r}; {hint}expected one of: {', '.join(spec)}"
                )
        out = {}
        for k, (conv, default) in spec.items():
            if k in d:
                out[k] = conv(self, d[k], f"{at}{k}")
            elif default is REQUIRED:
                raise self.fail(where, f"missing key {k!r}")
            else:
                out[k] = default
        return out


def _one_line(text: str, limit: int = 0) -> str:
    """``text`` with control characters escaped (one line), cut to ``limit`` characters."""
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return (
        text if not limit or len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} chars)"
    )


Conv = Callable[[_Checker, Any, str], Any]
Spec = dict[str, tuple[Conv, Any]]


def _kind(v: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array", dict: "a table"}  # fmt: skip
    return names.get(type(v), type(v).__name__) + ("" if isinstance(v, dict | list) else f" ({v!r})")  # fmt: skip


def _typed(t: type, what: str) -> Conv:
    def conv(c: _Checker, v: Any, where: str) -> Any:
        if not isinstance(v, t) or (t is int and isinstance(v, bool)):
            raise c.fail(where, f"expected {what}, got {_kind(v)}")
        return v

    return conv


_str, _bool = _typed(str, "a string"), _typed(bool, "true or false")


def _list(item: Conv) -> Conv:
    def conv(c: _Checker, v: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(v, list):
            raise c.fail(where, f"expected an array, got {_kind(v)}")
        return tuple(item(c, x, f"{where}[{i}]") for i, x in enumerate(v))

    return conv


def _choice(*values: Any) -> Conv:
    def conv(c: _Checker, v: Any, where: str) -> Any:
        if isinstance(v, bool) or v not in values:
            raise c.fail(where, f"{v!r} is not one of: {', '.join(map(repr, values))}")
        return v

    return conv


def _parsed(fn: Callable[[str], Any], what: str) -> Conv:
    """A string converted by ``fn``, whose ValueError (incl. ConfigError) becomes the message."""

    def conv(c: _Checker, v: Any, where: str) -> Any:
        if not isinstance(v, str):
            raise c.fail(where, f"expected {what}, got {_kind(v)}")
        try:
            return fn(v)
        except ValueError as e:  # the core's parsers may raise a bare ValueError too
            raise c.fail(where, f"{e} (expected {what})") from None

    return conv


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
        raise ValueError(f"bad name {_one_line(text, 60)!r}: 1-100 printable characters, one line")
    return text


_prefix = _parsed(_net, "a prefix like '192.0.2.0/24' (host bits clear)")
_iface = _parsed(lambda t: str(parse_interface(t)), "an address like '203.0.113.1/24'")
_ifname = _parsed(check_ifname, "an interface name")
_addr = _parsed(_endpoint, "'IP:PORT' or '[IPv6]:PORT', port 0-65535")


def _route(c: _Checker, v: Any, where: str) -> RouteSpec:
    if isinstance(v, str):
        return RouteSpec(_prefix(c, v, where))
    return RouteSpec(**c.record(v, where, {"prefix": (_prefix, REQUIRED), "dev": (_ifname, "lo")}))


def _sysctls(c: _Checker, v: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, dict):
        raise c.fail(where, f"expected a table of 'net.*' keys, got {_kind(v)}")
    for k, x in v.items():
        _parsed(sysctl_path, "a per-namespace 'net.*' key")(c, k, f'{where}."{k}"')
        if isinstance(x, bool) or not isinstance(x, str | int):
            raise c.fail(f'{where}."{k}"', f"expected a string or integer, got {_kind(x)}")
    return tuple((k, str(x)) for k, x in v.items())


def _options(c: _Checker, v: Any, where: str) -> tuple[tuple[str, Any], ...]:
    def option(name: str) -> Conv:
        def conv(c: _Checker, x: Any, at: str) -> Any:
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


def _errno_name(c: _Checker, v: Any, where: str) -> str:
    names = set(_errno.errorcode.values()) | {OK}
    if not isinstance(v, str) or v not in names:
        near = difflib.get_close_matches(str(v), sorted(names), 1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise c.fail(where, f"{v!r} is not an errno name like 'EADDRINUSE', nor 'OK'{hint}")
    return v


def _port_range(c: _Checker, v: Any, where: str) -> tuple[int, int]:
    p = v if isinstance(v, list) else [v, v]
    ints = len(p) == 2 and all(
        isinstance(x, int) and not isinstance(x, bool) and 0 < x < 65536 for x in p
    )
    if not ints or p[0] > p[1]:
        raise c.fail(where, f"expected a port 1-65535 or [lo, hi] with lo <= hi, got {_kind(v)}")
    return p[0], p[1]


def _port_or_any(c: _Checker, v: Any, where: str) -> int | None:
    if v == "any":
        return None
    return _port_range(c, v, where)[0] if isinstance(v, int) else _choice("any")(c, v, where)


_label = _parsed(check_label, "a word naming the socket in verdicts")


def _table(cls: Callable[..., Any], spec: Spec) -> Conv:
    """A table checked against ``spec`` and made into ``cls``."""
    return lambda c, v, where: cls(**c.record(v, where, spec))


def _raw(c: _Checker, v: Any, where: str) -> Any:
    return v  # checked later, once the other tables are known


PROTO = _choice("tcp", "udp")
LINK: Spec = {
    "name": (_ifname, REQUIRED),
    "kind": (_choice(*sorted(KINDS)), "dummy"),
    "addrs": (_list(_iface), ()),
}
ADDR: Spec = {"dev": (_ifname, REQUIRED), "cidr": (_iface, REQUIRED)}
INJECTOR: Spec = {"name": (_ifname, REQUIRED), "clients": (_list(_prefix), ())}
SETUP: Spec = {
    "local_routes": (_list(_route), ()), "links": (_list(_table(LinkSpec, LINK)), ()),
    "addrs": (_list(_table(AddrSpec, ADDR)), ()), "injectors": (_list(_table(InjectorSpec, INJECTOR)), ()),
    "sysctls": (_sysctls, ()),
}  # fmt: skip
SOCKET: Spec = {
    "label": (_label, REQUIRED), "proto": (PROTO, "tcp"), "family": (_choice(4, 6), None),
    "bind": (_addr, None), "listen": (_bool, None), "connect": (_addr, None),
    "options": (_options, ()), "bind_prefix": (_parsed(_net_port, "'PREFIX:PORT' or '[PREFIX]:PORT'"), None),
    "expect_errno": (_errno_name, None), "expect_port": (_port_range, None),
    "bind_port_of": (_str, None),
}  # fmt: skip
DISPATCH: Spec = {
    "label": (_str, REQUIRED), "prefix": (_prefix, REQUIRED), "proto": (PROTO, "tcp"),
    "port": (_port_or_any, None),
}  # fmt: skip
TOP: Spec = {
    "name": (_parsed(_name, "the scenario's name"), None), "description": (_str, ""), "claim": (_str, ""), "source": (_str, ""),
    "requires": (_list(_choice(*features.PROBES)), ()), "families": (_list(_choice(*FAMILIES)), ()),
    "evidence": (_bool, False),
    "setup": (_table(SetupSpec, SETUP), SetupSpec()),
    "socket": (_list(_raw), ()), "dispatch": (_list(_raw), ()), "expect": (_raw, {}),
    "program": (_list(_raw), ()),
}  # fmt: skip


def _strings(c: _Checker, v: Any, where: str, value: Conv = _str) -> tuple[tuple[str, Any], ...]:
    if not isinstance(v, dict):
        raise c.fail(where, f"expected a table, got {_kind(v)}")
    return tuple((k, value(c, x, f'{where}."{k}"')) for k, x in v.items())


def _file_name(c: _Checker, v: Any, where: str) -> str:
    if "/" in v or v in ("", ".", ".."):
        raise c.fail(where, f"{v!r}: a plain file name (it goes in the program's directory)")
    return v


def _argv(c: _Checker, v: Any, where: str) -> tuple[str, ...]:
    argv = _list(_str)(c, v, where)
    if not argv:
        raise c.fail(where, "an empty command line")
    return argv


def _seconds(c: _Checker, v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 600:
        raise c.fail(where, f"expected seconds (0-600], got {_kind(v)}")
    return float(v)


def _wait_spec(text: str) -> str:
    wanted([text])
    return text


PROGRAM: Spec = {
    "label": (_label, REQUIRED), "argv": (_argv, REQUIRED),
    "files": (lambda c, v, w: tuple((_file_name(c, k, w), x) for k, x in _strings(c, v, w)), ()),
    "wait_for": (_list(_parsed(_wait_spec, "'tcp IP:PORT' or 'udp IP:PORT'")), ()),
    "labels": (lambda c, v, w: _strings(c, v, w, _label), ()),
    "timeout": (_seconds, 10.0), "package": (_str, ""),
}  # fmt: skip


def _programs(c: _Checker, tables: list[Any], taken: list[str]) -> tuple[ProgramSpec, ...]:
    """The ``[[program]]`` tables; their labels prefix their sockets' (``nginx:...``)."""
    out = []
    for i, d in enumerate(tables):
        p = ProgramSpec(**c.record(d, f"program[{i}]", PROGRAM), line=c.header_line("program", i))
        if p.label in taken:
            raise c.fail(f"program[{i}].label", f"label {p.label!r} is used already")
        taken.append(p.label)
        out.append(p)
    return tuple(out)


def _socket(c: _Checker, i: int, d: dict[str, Any]) -> SocketSpec:
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


def _check_links(c: _Checker, sockets: tuple[SocketSpec, ...], setup: SetupSpec) -> None:
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
    c: _Checker, d: Any, labels: set[str], injectors: set[str], programs: tuple[str, ...] = ()
) -> tuple[ExpectSpec, ...]:
    if not isinstance(d, dict):
        raise c.fail("expect", f'expected a table of "FLOW" = "VERDICT" rows, got {_kind(d)}')
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
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            raise ScenarioError(f"{path}:{line}: not UTF-8 text: {e}") from None
    c = _Checker(path, text)
    parsed = bounds.parse(text, path)
    bounds.check_data(parsed, c.fail)
    data = c.record(parsed, "", TOP)
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
            _choice(*list(labels)[:i])(c, spec.bind_port_of, f"socket[{i}].bind_port_of")
    dispatch = []
    for i, b in enumerate(data["dispatch"]):
        binding = DispatchSpec(
            **c.record(b, f"dispatch[{i}]", DISPATCH), line=c.header_line("dispatch", i)
        )
        if binding.label not in labels:
            _choice(*labels)(c, binding.label, f"dispatch[{i}].label")
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
