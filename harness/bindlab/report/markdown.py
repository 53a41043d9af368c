"""The matrix as Markdown: a section and a table per scenario."""

from __future__ import annotations

from bindlab.report.common import Kernel, Results_, one_reason, summary
from bindlab.results import ERROR, FAIL, PASS, SKIP

MARKS = {PASS: "✅ pass", FAIL: "❌ FAIL", SKIP: "⏭ skip", ERROR: "💥 ERROR"}


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(results: Results_, kernel: Kernel = None) -> str:
    """The matrix as Markdown: a section and a table per scenario."""
    out = ["# bindlab dispatch matrix", ""]
    if kernel:
        out += [f"Kernel `{kernel.get('release', '?')}` ({kernel.get('machine', '?')}).", ""]
    out += [f"**{summary(results)}**", ""]
    for res in results:
        out += [f"## {res.name}", "", f"`{res.path}`", ""]
        if res.claim:
            out += [f"> {_md(res.claim)}", ">", f"> — {_md(res.source)}" if res.source else ">", ""]
        if shared := one_reason(res):
            out += [f"*{res.rows[0].status}: {_md(shared)}*", ""]
        why = any(r.evidence for r in res.rows)  # the kernel's evidence: a column when recorded
        out += [
            "| flow / socket steps | expected | observed | result |"
            + (" kernel evidence |" if why else ""),
            "|---|---|---|---|" + ("---|" if why else ""),
        ]
        for r in res.rows:
            mark = MARKS.get(r.status, r.status)
            out.append(
                f"| `{_md(r.name)}` | {_md(r.expected)} | {_md(r.observed or '-')} | {mark} |"
                + (f" {_md(r.evidence)} |" if why else "")
            )
        out.append("")
    return "\n".join(out)
