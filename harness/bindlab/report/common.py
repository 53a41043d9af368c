"""What every report format shares: counts, the one-line summary, the exit status of a run,
and the rows of a results file (:func:`from_results`)."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from bindlab.results import ERROR, FAIL, PASS, SKIP, Results, Row, ScenarioResult

Results_ = Sequence[ScenarioResult]
Kernel = dict[str, Any] | None
SHOWN = {PASS: "ok", FAIL: "FAIL", SKIP: "skip", ERROR: "ERROR"}
OUTCOMES = {"passed": PASS, "failed": FAIL, "skipped": SKIP, "error": ERROR}

# The exit status of a run, as kselftest spells them (tools/testing/selftests/kselftest.h):
# KSFT_PASS 0, KSFT_FAIL 1, KSFT_SKIP 4. 2 stays bindlab's "bad input or no privilege".
EXIT_PASS, EXIT_FAIL, EXIT_SKIP = 0, 1, 4


def totals(results: Results_) -> dict[str, int]:
    """Rows per status over every scenario."""
    out = {PASS: 0, FAIL: 0, SKIP: 0, ERROR: 0}
    for res in results:
        for r in res.rows:
            out[r.status] = out.get(r.status, 0) + 1
    return out


def ok(results: Results_) -> bool:
    """True when no row failed or errored (skips are fine)."""
    t = totals(results)
    return t[FAIL] == 0 and t[ERROR] == 0


def exit_status(results: Results_) -> int:
    """0 every row as expected, 1 a row failed or errored, 4 every row skipped (kselftest)."""
    t = totals(results)
    if t[FAIL] or t[ERROR]:
        return EXIT_FAIL
    if t[SKIP] and not t[PASS]:
        return EXIT_SKIP
    return EXIT_PASS


def summary(results: Results_) -> str:
    """``N rows in M scenarios: P pass, F fail, S skip, E error``."""
    t = totals(results)
    n = sum(t.values())
    return f"{n} rows in {len(results)} scenarios: {t[PASS]} pass, {t[FAIL]} fail, {t[SKIP]} skip, {t[ERROR]} error"


def one_reason(res: ScenarioResult) -> str | None:
    """The skip/error reason shared by every row of ``res``, if there is one."""
    reasons = {(r.status, r.detail) for r in res.rows}
    if len(reasons) == 1 and next(iter(reasons))[0] in (SKIP, ERROR):
        return next(iter(reasons))[1]
    return None


def status_of(res: ScenarioResult) -> str:
    """A scenario's own status: fail or error if any row is, skip if every row is, else pass."""
    seen = {r.status for r in res.rows}
    if FAIL in seen:
        return FAIL
    if ERROR in seen:
        return ERROR
    if seen == {SKIP}:
        return SKIP
    return PASS


def failures_first(rows: Sequence[Row]) -> list[Row]:
    """``rows`` with failed and errored ones first, then the rest, each in file order."""
    bad = [r for r in rows if r.status in (FAIL, ERROR)]
    return bad + [r for r in rows if r.status not in (FAIL, ERROR)]


def from_results(results: Results) -> list[ScenarioResult]:
    """The rows of a :class:`~bindlab.results.Results` file, one group per test file.

    A test that declared expected verdicts (a scenario file's row, or a Python test that
    passed its ``{flow: expected}`` dict to ``probe``) gets them in the EXPECTED column; its
    failures show the packets it recorded.
    """
    groups: dict[str, list[Row]] = defaultdict(list)
    for nodeid, t in results.tests.items():
        path, _, test = nodeid.partition("::")
        status = OUTCOMES.get(t.outcome, ERROR)
        named = [("flow", k, v) for k, v in t.expected.items()] + [
            ("step", k, v) for k, v in t.errnos.items()
        ]
        named += [("flow", k, "") for k in t.verdicts if k not in t.expected and k not in t.errnos]
        if not named:
            named = [("test", test or path, "")]
        packets = t.packets
        # A failed test that declared expectations: only its mismatched rows failed.
        mismatched = {
            name
            for _, name, exp in named
            if exp and t.verdicts.get(name) and t.verdicts[name] not in exp.split("|")
        }
        for kind, name, expected in named:
            observed = t.verdicts.get(name, "")
            row_status = status
            if status == FAIL and mismatched and kind == "flow":
                row_status = FAIL if name in mismatched else PASS
            detail = "" if row_status == PASS else t.reason
            if row_status != PASS and packets.get(name):
                detail = f"{detail}\n{packets[name]}" if detail else packets[name]
            row = Row(kind, name, expected, observed, row_status, detail)
            row.evidence = t.evidence.get(name, "")
            groups[path].append(row)
    return [
        ScenarioResult(os.path.basename(p).rsplit(".", 1)[0], p, rows) for p, rows in groups.items()
    ]
