"""Compare two results files (two kernels, or two runs): ``bindlab diff A B``.

Rows say what differs: a kernel feature, a test's outcome (skips that appeared or vanished
included), a flow's verdict, a step's errno, a test present on one side only. A row is a
regression when a test passing in A fails in B, or a verdict or errno observed on both sides
changed; ``bindlab diff`` then exits 1. Verdicts that merely moved between the sockets of a
reuseport group (hashing differs per boot) in a test that passed on both sides fold into
one ``spread`` row, not a regression (``--strict`` counts them). :func:`diff` returns the rows for any renderer
(text, Markdown, JSON; an HTML report takes :meth:`DiffRow.as_dict`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from typing import Any

from bindlab.results import Results, TestResult

PASSING = {"passed"}
FAILING = {"failed", "error"}
ABSENT = "-"


@dataclass(frozen=True)
class DiffRow:
    """One difference: ``kind`` of thing, the test (or feature), the item, A's and B's value."""

    kind: str  # feature | test | outcome | skip | verdict | errno | spread
    test: str
    item: str
    a: str
    b: str
    regression: bool = False
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _feature_rows(a: Results, b: Results) -> list[DiffRow]:
    fa, fb = a.kernel.get("features", {}), b.kernel.get("features", {})
    rows = []
    for name in sorted(set(fa) | set(fb)):
        va, vb = fa.get(name) or {}, fb.get(name) or {}
        if not va or not vb or bool(va.get("ok")) != bool(vb.get("ok")):
            missing = [
                f"{s}: {v.get('detail', '')}"
                for s, v in (("A", va), ("B", vb))
                if v and not v.get("ok")
            ]
            rows.append(
                DiffRow("feature", name, "", _feature(va), _feature(vb), note="; ".join(missing))
            )
    return rows


def _feature(v: dict[str, Any]) -> str:
    if not v:
        return ABSENT
    return "yes" if v.get("ok") else "no"


def _outcome_row(name: str, ta: TestResult, tb: TestResult) -> DiffRow | None:
    oa, ob = ta.outcome, tb.outcome
    if oa == ob:
        return None
    if ob == "skipped":
        return DiffRow("skip", name, "", oa, ob, note=f"skip appeared: {tb.reason}")
    if oa == "skipped":
        fails = f"; fails: {tb.reason}" if ob in FAILING else ""
        return DiffRow("skip", name, "", oa, ob, note=f"skip vanished ({ta.reason}){fails}")
    regression = oa in PASSING and ob in FAILING
    return DiffRow("outcome", name, "", oa, ob, regression, tb.reason if ob in FAILING else "")


def _value_rows(
    kind: str, name: str, da: dict[str, str], db: dict[str, str], expected: dict[str, str]
) -> list[DiffRow]:
    rows = []
    for item in sorted(set(da) | set(db)):
        va, vb = da.get(item, ABSENT), db.get(item, ABSENT)
        if va == vb:
            continue
        both = item in da and item in db
        note = f"expected {expected[item]}" if item in expected else ""
        rows.append(DiffRow(kind, name, item, va, vb, both, note))
    return rows


def _reshuffle(name: str, ta: TestResult, tb: TestResult, rows: list[DiffRow]) -> list[DiffRow]:
    """Fold verdicts that only moved between labels both runs saw, in a test that passed on
    both sides and pinned none of them (reuseport hashing), into one row: not a regression."""
    moved = [r for r in rows if r.regression and r.item not in {**ta.expected, **tb.expected}]
    seen_a, seen_b = set(ta.verdicts.values()), set(tb.verdicts.values())
    if (ta.outcome, tb.outcome) != ("passed", "passed") or not moved:
        return rows
    if not all(r.a in seen_b and r.b in seen_a for r in moved):
        return rows
    labels = ", ".join(sorted(seen_a | seen_b))
    spread = DiffRow(
        "spread",
        name,
        f"{len(moved)} of {len(set(ta.verdicts) & set(tb.verdicts))} flows",
        labels,
        labels,
        note="verdicts moved between labels both runs saw (reuseport hashing?); "
        "the test passed on both",
    )
    return [r for r in rows if r not in moved] + [spread]


def diff(a: Results, b: Results, features: bool = True, strict: bool = False) -> list[DiffRow]:
    """Every difference from ``a`` to ``b``, features first, then tests in name order.

    Unless ``strict``: a reshuffle (:func:`_reshuffle`) is one row, not a regression; flows
    probed on one side only are left out when the outcome changed (its row says why).
    """
    rows = _feature_rows(a, b) if features else []
    for name in sorted(set(a.tests) | set(b.tests)):
        ta, tb = a.tests.get(name), b.tests.get(name)
        if ta is None or tb is None:
            present = ta or tb
            outcome = present.outcome if present else ""
            where = ("A", outcome, ABSENT) if ta else ("B", ABSENT, outcome)
            rows.append(DiffRow("test", name, "", where[1], where[2], note=f"only in {where[0]}"))
            continue
        row = _outcome_row(name, ta, tb)
        if row:
            rows.append(row)
        if "skipped" in (ta.outcome, tb.outcome):
            continue  # a skipped side observed nothing: the skip row says it all
        expected = {**ta.expected, **tb.expected}
        found = _value_rows("verdict", name, ta.verdicts, tb.verdicts, expected)
        found += _value_rows("errno", name, ta.errnos, tb.errnos, {})
        if not strict:
            if row:
                found = [r for r in found if ABSENT not in (r.a, r.b)]
            found = _reshuffle(name, ta, tb, found)
            if (ta.outcome, tb.outcome) == ("passed", "passed"):
                found = [_within(r, {**expected, **ta.errnos, **tb.errnos}) for r in found]
        rows += found
    return rows


def satisfies(expected: str, observed: str) -> bool:
    """Whether ``observed`` is one of ``expected``'s alternatives (``r1|r2``), a port inside
    an expected range (``port 40000-40511``) included."""
    for alt in expected.split("|"):
        if alt == observed:
            return True
        lo, dash, hi = alt.removeprefix("port ").partition("-")
        port = observed.removeprefix("port ")
        numbers = dash and port.isdigit() and lo.isdigit() and hi.isdigit()
        if alt.startswith("port ") and numbers and int(lo) <= int(port) <= int(hi):
            return True
    return False


def _within(r: DiffRow, expected: dict[str, str]) -> DiffRow:
    """A changed verdict both of whose values the test allows is no regression (a member of
    a reuseport group, a port of a range): it is shown, with the expectation it met."""
    exp = expected.get(r.item)
    if not r.regression or exp is None or not (satisfies(exp, r.a) and satisfies(exp, r.b)):
        return r
    return replace(r, regression=False, note=f"both within expected {exp}")


def describe(r: Results, path: str) -> str:
    """One line naming a results file's kernel: release, VM facts, config digest."""
    k = r.kernel
    vm = k.get("vm")
    where = f"vm {vm.get('accel')} {vm.get('fs')}" if vm else "host"
    digest = (k.get("build") or {}).get("config_digest")
    return f"{path}: {k.get('release', '?')} ({where}{', config ' + digest if digest else ''})"


def summary(rows: list[DiffRow], a: Results, b: Results) -> str:
    common = len(set(a.tests) & set(b.tests))
    reg = sum(r.regression for r in rows)
    return f"{len(rows)} difference(s), {reg} regression(s); {common} test(s) in both runs"


def render_text(rows: list[DiffRow], a: Results, b: Results, pa: str, pb: str) -> str:
    out = [f"# A: {describe(a, pa)}", f"# B: {describe(b, pb)}"]
    for r in rows:
        what = f"{r.test}  {r.item}" if r.item else r.test
        flag = "  REGRESSION" if r.regression else ""
        note = f"  ({r.note})" if r.note else ""
        out.append(f"{r.kind:8} {what}: {r.a} -> {r.b}{flag}{note}")
    out.append(f"# {summary(rows, a, b)}")
    return "\n".join(out)


def render_markdown(rows: list[DiffRow], a: Results, b: Results, pa: str, pb: str) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|") or " "

    out = [
        f"**A**: `{describe(a, pa)}`  ",
        f"**B**: `{describe(b, pb)}`",
        "",
        "| kind | test / feature | item | A | B | regression | note |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        cells = (r.kind, r.test, r.item, r.a, r.b, "**yes**" if r.regression else "", r.note)
        out.append("| " + " | ".join(cell(c) for c in cells) + " |")
    out += ["", summary(rows, a, b)]
    return "\n".join(out)


FORMATS = ("table", "md", "json")  # the names every bindlab command uses for -f/--format
DEPRECATED_FORMATS = {"text": "table", "markdown": "md"}


def _format(name: str) -> str:
    """``-f`` value: a name of :data:`FORMATS`, or a deprecated one (with a warning)."""
    if name in DEPRECATED_FORMATS:
        new = DEPRECATED_FORMATS[name]
        print(f"bindlab diff: --format {name} is deprecated: use -f {new}", file=sys.stderr)
        return new
    if name not in FORMATS:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {name!r} (choose from {', '.join(FORMATS)})"
        )
    return name


def cli(argv: list[str]) -> int:
    """``bindlab diff A B``: exit 1 when B regressed against A, 2 on unreadable input."""
    p = argparse.ArgumentParser(
        prog="bindlab diff",
        description="Show the verdicts, errnos, outcomes and skips that differ between two "
        "results files (pytest --bindlab-results, bindlab vm). Exit 1 on a regression.",
    )
    p.add_argument("a", help="results file A (the baseline)")
    p.add_argument("b", help="results file B")
    p.add_argument(
        "-f",
        "--format",
        type=_format,
        default="table",
        metavar="{table,md,json}",
        help="table (default), md or json; 'text' and 'markdown' are deprecated spellings",
    )
    p.add_argument("--no-features", action="store_true", help="leave kernel features out")
    p.add_argument(
        "--strict",
        action="store_true",
        help="every changed verdict is a regression, reuseport reshuffles included",
    )
    args = p.parse_args(argv)
    try:
        ra, rb = Results.load(args.a), Results.load(args.b)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"bindlab diff: {e}", file=sys.stderr)
        return 2
    rows = diff(ra, rb, features=not args.no_features, strict=args.strict)
    if args.format == "json":
        print(json.dumps([r.as_dict() for r in rows], indent=1))
    elif args.format == "md":
        print(render_markdown(rows, ra, rb, args.a, args.b))
    else:
        print(render_text(rows, ra, rb, args.a, args.b))
    return 1 if any(r.regression for r in rows) else 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
