"""The checking half of the scenario loader: a :class:`Checker` that locates each problem by
line and key path, and the generic converters (typed values, lists, choices, parsed strings,
tables) that :mod:`bindlab.scenario.load` builds its key specs from."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

from bindlab.scenario.model import ScenarioError

REQUIRED = object()


class Checker:
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
        problem = one_line(problem, 300)
        return ScenarioError(
            f"{at}: {one_line(where, 120)}: {problem}" if where else f"{at}: {problem}"
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
            raise self.fail(where, f"expected a table, got {kind_of(d)}")
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


def one_line(text: str, limit: int = 0) -> str:
    """``text`` with control characters escaped (one line), cut to ``limit`` characters."""
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return (
        text if not limit or len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} chars)"
    )


Conv = Callable[[Checker, Any, str], Any]
Spec = dict[str, tuple[Conv, Any]]


def kind_of(v: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array", dict: "a table"}  # fmt: skip
    return names.get(type(v), type(v).__name__) + ("" if isinstance(v, dict | list) else f" ({v!r})")  # fmt: skip


def typed(t: type, what: str) -> Conv:
    def conv(c: Checker, v: Any, where: str) -> Any:
        if not isinstance(v, t) or (t is int and isinstance(v, bool)):
            raise c.fail(where, f"expected {what}, got {kind_of(v)}")
        return v

    return conv


str_value, bool_value = typed(str, "a string"), typed(bool, "true or false")


def list_of(item: Conv) -> Conv:
    def conv(c: Checker, v: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(v, list):
            raise c.fail(where, f"expected an array, got {kind_of(v)}")
        return tuple(item(c, x, f"{where}[{i}]") for i, x in enumerate(v))

    return conv


def choice(*values: Any) -> Conv:
    def conv(c: Checker, v: Any, where: str) -> Any:
        if isinstance(v, bool) or v not in values:
            raise c.fail(where, f"{v!r} is not one of: {', '.join(map(repr, values))}")
        return v

    return conv


def parsed(fn: Callable[[str], Any], what: str) -> Conv:
    """A string converted by ``fn``, whose ValueError (incl. ConfigError) becomes the message."""

    def conv(c: Checker, v: Any, where: str) -> Any:
        if not isinstance(v, str):
            raise c.fail(where, f"expected {what}, got {kind_of(v)}")
        try:
            return fn(v)
        except ValueError as e:  # the core's parsers may raise a bare ValueError too
            raise c.fail(where, f"{e} (expected {what})") from None

    return conv


def table(cls: Callable[..., Any], spec: Spec) -> Conv:
    """A table checked against ``spec`` and made into ``cls``."""
    return lambda c, v, where: cls(**c.record(v, where, spec))


def raw(c: Checker, v: Any, where: str) -> Any:
    return v  # checked later, once the other tables are known
