"""Check a run's reports against their specs: ``python tests/check_reports.py JUNIT RESULTS``.

JUNIT (pytest's ``--junitxml``) must validate against the xunit2 schema; RESULTS (a
``--bindlab-results`` file) rendered by ``bindlab report`` as KTAP must pass the KTAP v1
checker and as JUnit the schema too. ``ci/run test`` runs it on the whole suite's reports.
Exit 0 when all hold, 1 naming the first problem of each report otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ktap_check
import xunit2
from bindlab import report
from bindlab.results import Results


def check(junit: str | None, results: str | None) -> list[str]:
    """Every problem found, one line each (empty when the reports hold)."""
    problems = []
    if junit:
        problems += [f"{junit}: {e}" for e in xunit2.errors(Path(junit))[:5]]
    if results:
        res = Results.load(results)
        groups = report.from_results(res)
        try:
            doc = ktap_check.parse(report.render("ktap", groups, res.kernel))
        except ktap_check.KTAPError as e:
            problems.append(f"{results} as KTAP: {e}")
        else:
            print(f"# {results}: KTAP v1 holds ({len(doc.tests)} tests, {len(doc.leaves())} cases)")
        problems += [
            f"{results} as JUnit: {e}"
            for e in xunit2.errors(report.render("junit", groups, res.kernel))[:5]
        ]
    if junit and not problems:
        print(f"# {junit}: valid xunit2")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: check_reports.py JUNIT.xml RESULTS.json", file=sys.stderr)
        return 2
    problems = check(*argv)
    for p in problems:
        print(f"check_reports: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
