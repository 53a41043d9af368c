"""The terminal table: one block per scenario, failures followed by their packets."""

from __future__ import annotations

from bindlab.report.common import SHOWN, Kernel, Results_, one_reason, summary
from bindlab.results import ERROR, FAIL, PASS, SKIP


def table(results: Results_, kernel: Kernel = None) -> str:
    """A plain-text matrix, one block per scenario, failures followed by their packets."""
    out = [f"# kernel {kernel.get('release', '?')}" if kernel else ""]
    for res in results:
        t = ", ".join(f"{n} {s}" for s in (PASS, FAIL, SKIP, ERROR) if (n := res.count(s)))
        out.append(f"\n== {res.name} ({res.path}): {t or 'no rows'}")
        if res.claim:
            out.append(f"   claim:  {res.claim}")
        if res.source:
            out.append(f"   source: {res.source}")
        shared = one_reason(res)
        if shared:
            out.append(f"   {res.rows[0].status}: {shared}")
        rows = [("FLOW / SOCKET STEPS", "EXPECTED", "OBSERVED", "RESULT")]
        rows += [
            (r.name, r.expected, r.observed or "-", SHOWN.get(r.status, r.status)) for r in res.rows
        ]
        w = [max(len(row[i]) for row in rows) for i in range(3)]
        for (name, exp, obs, st), r in zip(rows, [None, *res.rows], strict=True):
            out.append(f"   {name:<{w[0]}}  {exp:<{w[1]}}  {obs:<{w[2]}}  {st}".rstrip())
            if r is not None and r.detail and r.status != PASS and not shared:
                out += [f"      {line}" for line in r.detail.splitlines()]
            if r is not None and r.evidence:
                out.append(f"      kernel: {r.evidence}")
    out.append(f"\n# {summary(results)}")
    return "\n".join(out).lstrip("\n") + "\n"
