"""A strict checker of KTAP version 1 (Documentation/dev-tools/ktap.rst), for our own output.

:func:`parse` turns KTAP text into a tree of :class:`Test` and raises :class:`KTAPError`
naming the line that breaks the grammar:

- a document (the whole output, or a nested test) starts with ``KTAP version 1`` and a plan
  ``1..N``, at its indentation; nested documents are indented two spaces more;
- result lines are ``ok|not ok NUMBER [DESCRIPTION][ # [DIRECTIVE] [DIAGNOSTIC]]``, numbered
  from 1 by one at each level; a description holds no ``#``; exactly N results follow a plan;
- a nested document ends with its parent's result line (diagnostic lines may come between);
- directives: ``SKIP`` (with a reason, our rule), ``ERROR`` and ``TIMEOUT`` on ``not ok``
  only, ``XFAIL``, ``TODO``; a parent with a failed subtest is ``not ok``;
- every other line is a diagnostic line (``# ...``): no unknown lines in our output;
- a ``# Totals: pass:P fail:F xfail:X xpass:XP skip:S error:E`` line (kselftest's), if
  present, counts the leaf results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

RESULT = re.compile(
    r"^(?P<ok>ok|not ok) (?P<n>[1-9][0-9]*)(?: (?P<desc>[^#]*?))?"
    r"(?: ?# ?(?P<directive>SKIP|TODO|XFAIL|TIMEOUT|ERROR)?(?: (?P<diag>.*))?)? *$"
)
PLAN = re.compile(r"^1\.\.(?P<n>0|[1-9][0-9]*)$")
TOTALS = re.compile(
    r"^# Totals: pass:(\d+) fail:(\d+) xfail:(\d+) xpass:(\d+) skip:(\d+) error:(\d+)$"
)
DIRECTIVES_NOT_OK = {"ERROR", "TIMEOUT"}


class KTAPError(ValueError):
    """The text is not KTAP version 1: the message names the line."""


@dataclass
class Test:
    """A result line, the diagnostic lines directly before it, and its subtests."""

    number: int
    name: str
    ok: bool
    directive: str | None = None
    reason: str = ""
    diagnostics: list[str] = field(default_factory=list)
    subtests: list[Test] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.directive == "SKIP":
            return "skip"
        if self.directive == "ERROR":
            return "error"
        return "pass" if self.ok else "fail"

    def leaves(self) -> list[Test]:
        if not self.subtests:
            return [self]
        return [leaf for t in self.subtests for leaf in t.leaves()]


@dataclass
class Document:
    plan: int
    tests: list[Test]
    diagnostics: list[str]  # lines not directly before a result (e.g. the totals)

    def leaves(self) -> list[Test]:
        return [leaf for t in self.tests for leaf in t.leaves()]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


class _Parser:
    def __init__(self, text: str) -> None:
        if not text.endswith("\n"):
            raise KTAPError("the output does not end with a newline")
        self.lines = text.splitlines()
        self.i = 0

    def fail(self, why: str, at: int | None = None) -> KTAPError:
        n = self.i if at is None else at
        line = self.lines[n] if n < len(self.lines) else "<end>"
        return KTAPError(f"line {n + 1}: {why}: {line!r}")

    def document(self, depth: int) -> Document:
        pad = "  " * depth
        if self.i >= len(self.lines) or self.lines[self.i] != pad + "KTAP version 1":
            raise self.fail(f"expected {pad + 'KTAP version 1'!r}")
        self.i += 1
        if (
            self.i >= len(self.lines)
            or not PLAN.match(self.lines[self.i][len(pad) :])
            or _indent(self.lines[self.i]) != len(pad)
        ):
            raise self.fail("expected a plan line 1..N after the version line")
        plan = int(PLAN.match(self.lines[self.i][len(pad) :])["n"])  # type: ignore[index]
        self.i += 1
        tests: list[Test] = []
        pending: list[str] = []  # diagnostics waiting for their result line
        loose: list[str] = []
        children: list[Test] | None = None
        while self.i < len(self.lines):
            line = self.lines[self.i]
            ind = _indent(line)
            body = line[ind:]
            if ind < len(pad):
                break  # the end of this nested document
            if ind == len(pad) + 2 and body == "KTAP version 1":
                if children is not None:
                    raise self.fail("a second nested document before the parent's result")
                children = self.document(depth + 1).tests
                continue
            if ind != len(pad):
                raise self.fail(f"indented {ind} spaces, expected {len(pad)}")
            if body.startswith("#"):
                if not (body == "#" or body.startswith("# ")):
                    raise self.fail("a diagnostic line is '# text'")
                pending.append(body[2:])
                self.i += 1
                continue
            m = RESULT.match(body)
            if not m:
                raise self.fail("neither a result, a diagnostic nor a nested document")
            t = self.result(m, len(tests) + 1, children or [])
            t.diagnostics, pending, children = pending, [], None
            tests.append(t)
            self.i += 1
        loose += pending
        if children is not None:
            raise self.fail("a nested document without its parent's result line")
        if len(tests) != plan:
            raise self.fail(f"the plan says 1..{plan} but {len(tests)} result(s) follow")
        return Document(plan, tests, loose)

    def result(self, m: re.Match[str], expect: int, subtests: list[Test]) -> Test:
        n = int(m["n"])
        if n != expect:
            raise self.fail(f"test number {n}, expected {expect}")
        ok = m["ok"] == "ok"
        directive, diag = m["directive"], (m["diag"] or "").strip()
        desc = (m["desc"] or "").strip()
        if "#" in desc:
            raise self.fail("a description cannot hold '#'")
        if directive == "SKIP" and not diag:
            raise self.fail("SKIP without a reason")
        if directive in DIRECTIVES_NOT_OK and ok:
            raise self.fail(f"{directive} on an 'ok' line")
        if directive == "ERROR" and not diag:
            raise self.fail("ERROR without the error")
        failed = [s for s in subtests if s.status in ("fail", "error")]
        if failed and ok:
            raise self.fail(f"'ok' although subtest {failed[0].number} failed")
        if subtests and not ok and not failed and directive is None:
            raise self.fail("'not ok' although no subtest failed")
        if subtests and directive == "SKIP" and any(s.status != "skip" for s in subtests):
            raise self.fail("SKIP although a subtest ran")
        return Test(n, desc, ok, directive, diag, subtests=subtests)


def parse(text: str) -> Document:
    """Parse (and check) KTAP version 1 ``text``; :class:`KTAPError` names the bad line."""
    p = _Parser(text)
    doc = p.document(0)
    if p.i != len(p.lines):
        raise p.fail("text after the end of the document")
    totals = [TOTALS.match(d if d.startswith("#") else f"# {d}") for d in doc.diagnostics]
    for m in filter(None, totals):
        leaves = doc.leaves()
        counted = {s: sum(t.status == s for t in leaves) for s in ("pass", "fail", "skip", "error")}
        said = dict(
            zip(
                ("pass", "fail", "xfail", "xpass", "skip", "error"),
                map(int, m.groups()),
                strict=True,
            )
        )
        if any(said[k] != v for k, v in counted.items()):
            raise KTAPError(f"# Totals says {said}, the results count {counted}")
    return doc
