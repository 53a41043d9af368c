"""Reports of a run: terminal table, Markdown, JSON, HTML, KTAP and JUnit.

Rows are flows (or a socket's steps) with expected, observed and the result, grouped per
scenario. Every format renders a list of :class:`~bindlab.results.ScenarioResult`; a
:class:`~bindlab.results.Results` file becomes one with :func:`from_results`. One module per
format (:mod:`.table`, :mod:`.markdown`, :mod:`.document`, :mod:`.page`, :mod:`.ktap`,
:mod:`.junit`); none imports namespace code, so ``bindlab report`` runs unprivileged.

Example::

    from bindlab import report
    print(report.render("ktap", results, kernel={"release": "6.18.0"}))
"""

from __future__ import annotations

from collections.abc import Callable

from bindlab.report.common import (
    EXIT_FAIL,
    EXIT_PASS,
    EXIT_SKIP,
    OUTCOMES,
    SHOWN,
    Kernel,
    Results_,
    exit_status,
    from_results,
    ok,
    summary,
    totals,
)
from bindlab.report.document import to_json
from bindlab.report.junit import junit
from bindlab.report.ktap import ktap
from bindlab.report.markdown import markdown
from bindlab.report.page import colour, html
from bindlab.report.table import table

__all__ = [
    "EXIT_FAIL", "EXIT_PASS", "EXIT_SKIP", "FORMATS", "OUTCOMES", "SHOWN", "colour",
    "exit_status", "from_results", "html", "junit", "ktap", "markdown", "ok", "render",
    "summary", "table", "to_json", "totals",
]  # fmt: skip

FORMATS: dict[str, Callable[[Results_, Kernel], str]] = {
    "table": table, "md": markdown, "json": to_json, "html": html, "ktap": ktap, "junit": junit,
}  # fmt: skip


def render(fmt: str, results: Results_, kernel: Kernel = None) -> str:
    """Render ``results`` in format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; known: {', '.join(FORMATS)}")
    return FORMATS[fmt](results, kernel)
