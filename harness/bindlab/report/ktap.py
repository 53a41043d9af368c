"""KTAP version 1 (the kernel's Documentation/dev-tools/ktap.rst), for kernel CI.

One top-level test per scenario file (or per test module of a results file), each a nested
KTAP document whose test cases are its rows (flows, socket steps)::

    KTAP version 1
    1..2
    # kernel 6.18.0 (x86_64)
      KTAP version 1
      1..2
      # fixtures/scenarios/split.toml
      ok 1 tcp 198.18.0.1:1 -> 192.0.2.10:80
      # expected 'nginx', got 'apache'
      # -> IP / TCP 198.18.0.1:2 > 192.0.2.200:http S
      not ok 2 tcp 198.18.0.1:2 -> 192.0.2.200:80
    # split: 1 of 2 rows not as expected
    not ok 1 split
      KTAP version 1
      1..1
      # fixtures/scenarios/nobpf.toml
      ok 1 udp 198.18.0.1:1 -> 192.0.2.1:53 # SKIP sk_lookup dispatcher not available
    ok 2 nobpf # SKIP sk_lookup dispatcher not available
    # Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0

Diagnostic lines about a test come directly before its result line; a skip carries its
reason after ``# SKIP``; a row that could not be observed (setup failed) is ``not ok ... #
ERROR reason``. The ``# Totals`` line is kselftest's (tools/testing/selftests/net/lib/py/
ksft.py). KTAP is formatted here and nowhere else.
"""

from __future__ import annotations

from bindlab.report.common import Kernel, Results_, one_reason, status_of, totals
from bindlab.results import ERROR, FAIL, PASS, SKIP, Row, ScenarioResult

INDENT = "  "  # one nesting level (ktap.rst: "two spaces")


def text(s: str) -> str:
    """One line without ``#`` (which would start a directive): ``#`` becomes ``%23``."""
    return " ".join(s.replace("#", "%23").split())


def _result(ok: bool, n: int, name: str, directive: str = "", reason: str = "") -> str:
    line = f"{'ok' if ok else 'not ok'} {n} {text(name)}"
    if directive:
        line += f" # {directive}" + (f" {text(reason)}" if reason else "")
    return line


def _diagnostics(lines: str) -> list[str]:
    return [f"# {ln}".rstrip() for ln in lines.splitlines() if ln.strip()]


def case(r: Row, n: int) -> list[str]:
    """A row's diagnostic lines, then its result line."""
    if r.status == PASS:
        return [_result(True, n, r.name)]
    if r.status == SKIP:
        return [_result(True, n, r.name, "SKIP", r.detail or "skipped")]
    if r.status == ERROR:
        first, _, rest = (r.detail or "error").partition("\n")
        return [*_diagnostics(rest), _result(False, n, r.name, "ERROR", first)]
    out = [f"# expected {r.expected!r}, got {r.observed!r}", *_diagnostics(r.detail)]
    return [*out, _result(False, n, r.name)]


def subtest(res: ScenarioResult, n: int) -> list[str]:
    """A scenario as a nested test: its version and plan, its rows, then its own result."""
    inner = ["KTAP version 1", f"1..{len(res.rows)}"]
    inner += [f"# {text(res.path)}"]
    if res.claim:
        inner.append(f"# claim: {text(res.claim)}")
    for i, r in enumerate(res.rows, 1):
        inner += case(r, i)
    out = [INDENT + line for line in inner]
    st, shared = status_of(res), one_reason(res)
    if st == SKIP:
        return [*out, _result(True, n, res.name, "SKIP", shared or "every row skipped")]
    if st == ERROR and shared is not None:
        return [*out, _result(False, n, res.name, "ERROR", shared.partition("\n")[0])]
    bad = res.count(FAIL) + res.count(ERROR)
    if bad:
        out.append(f"# {res.name}: {bad} of {len(res.rows)} rows not as expected")
    return [*out, _result(st == PASS, n, res.name)]


def ktap(results: Results_, kernel: Kernel = None) -> str:
    """KTAP version 1: a nested test per scenario with its rows as test cases."""
    out = ["KTAP version 1", f"1..{len(results)}"]
    if kernel:
        out.append(f"# kernel {kernel.get('release', '?')} ({kernel.get('machine', '?')})")
    for n, res in enumerate(results, 1):
        out += subtest(res, n)
    t = totals(results)
    out.append(
        f"# Totals: pass:{t[PASS]} fail:{t[FAIL]} xfail:0 xpass:0 skip:{t[SKIP]} error:{t[ERROR]}"
    )
    return "\n".join(out) + "\n"
