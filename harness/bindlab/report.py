"""The dispatch matrix of a run: terminal table, Markdown, JSON, HTML and KTAP.

Rows are flows (or a socket's steps) with expected, observed and the result, grouped per
scenario. Everything here renders a list of :class:`~bindlab.scenario.run.ScenarioResult`; a
:class:`~bindlab.results.Results` file becomes one with :func:`from_results`. KTAP is
formatted here and nowhere else.
"""

from __future__ import annotations

import html as _html
import ipaddress
import json
import os
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from bindlab.flow import Flow
from bindlab.results import ERROR, FAIL, PASS, SKIP, Results, Row, ScenarioResult

Results_ = Sequence[ScenarioResult]
SHOWN = {PASS: "ok", FAIL: "FAIL", SKIP: "skip", ERROR: "ERROR"}
OUTCOMES = {"passed": PASS, "failed": FAIL, "skipped": SKIP, "error": ERROR}
RESERVED_COLOURS = {"RST": "#c8c8c8", "ICMP": "#e2e2e2", "NONE": "#ffffff", "UNLABELLED": "#f4d03f"}


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


def summary(results: Results_) -> str:
    t = totals(results)
    n = sum(t.values())
    return f"{n} rows in {len(results)} scenarios: {t[PASS]} pass, {t[FAIL]} fail, {t[SKIP]} skip, {t[ERROR]} error"


def _one_reason(res: ScenarioResult) -> str | None:
    """The skip/error reason shared by every row of ``res``, if there is one."""
    reasons = {(r.status, r.detail) for r in res.rows}
    if len(reasons) == 1 and next(iter(reasons))[0] in (SKIP, ERROR):
        return next(iter(reasons))[1]
    return None


# -- terminal table and Markdown ----------------------------------------------------------


def table(results: Results_, kernel: dict[str, Any] | None = None) -> str:
    """A plain-text matrix, one block per scenario, failures followed by their packets."""
    out = [f"# kernel {kernel.get('release', '?')}" if kernel else ""]
    for res in results:
        t = ", ".join(f"{n} {s}" for s in (PASS, FAIL, SKIP, ERROR) if (n := res.count(s)))
        out.append(f"\n== {res.name} ({res.path}): {t or 'no rows'}")
        if res.claim:
            out.append(f"   claim:  {res.claim}")
        if res.source:
            out.append(f"   source: {res.source}")
        shared = _one_reason(res)
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


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(results: Results_, kernel: dict[str, Any] | None = None) -> str:
    """The matrix as Markdown: a section and a table per scenario."""
    out = ["# bindlab dispatch matrix", ""]
    if kernel:
        out += [f"Kernel `{kernel.get('release', '?')}` ({kernel.get('machine', '?')}).", ""]
    out += [f"**{summary(results)}**", ""]
    for res in results:
        out += [f"## {res.name}", "", f"`{res.path}`", ""]
        if res.claim:
            out += [f"> {_md(res.claim)}", ">", f"> — {_md(res.source)}" if res.source else ">", ""]
        if shared := _one_reason(res):
            out += [f"*{res.rows[0].status}: {_md(shared)}*", ""]
        why = any(r.evidence for r in res.rows)  # the kernel's evidence: a column when recorded
        out += [
            "| flow / socket steps | expected | observed | result |"
            + (" kernel evidence |" if why else ""),
            "|---|---|---|---|" + ("---|" if why else ""),
        ]
        for r in res.rows:
            mark = {PASS: "✅ pass", FAIL: "❌ FAIL", SKIP: "⏭ skip", ERROR: "💥 ERROR"}.get(
                r.status, r.status
            )
            out.append(
                f"| `{_md(r.name)}` | {_md(r.expected)} | {_md(r.observed or '-')} | {mark} |"
                + (f" {_md(r.evidence)} |" if why else "")
            )
        out.append("")
    return "\n".join(out)


# -- JSON ---------------------------------------------------------------------------------


def to_json(results: Results_, kernel: dict[str, Any] | None = None) -> str:
    """The matrix as JSON (``"format": "bindlab-report/1"``)."""
    doc = {
        "format": "bindlab-report/1",
        "kernel": kernel,
        "totals": totals(results),
        "scenarios": [
            {
                "name": res.name, "path": res.path, "claim": res.claim, "source": res.source,
                "prefixes": list(res.prefixes), "seconds": round(res.seconds, 3),
                "rows": [asdict(r) for r in res.rows],
            }
            for res in results
        ],
    }  # fmt: skip
    return json.dumps(doc, indent=1) + "\n"


# -- KTAP ---------------------------------------------------------------------------------


def _ktap_text(text: str) -> str:
    return " ".join(text.replace("#", "%23").split())


def ktap(results: Results_, kernel: dict[str, Any] | None = None) -> str:
    """KTAP for kernel CI: one test line per row, ``# `` lines for everything else."""
    rows = [(res, r) for res in results for r in res.rows]
    out = ["TAP version 13", f"1..{len(rows)}"]
    if kernel:
        out.append(f"# kernel {kernel.get('release', '?')}")
    current = None
    for n, (res, r) in enumerate(rows, 1):
        if res is not current:
            current = res
            out.append(f"# scenario {res.name} ({res.path})")
        name = _ktap_text(f"{res.name}: {r.name}")
        if r.status == PASS:
            out.append(f"ok {n} {name}")
        elif r.status == SKIP:
            out.append(f"ok {n} {name} # SKIP {_ktap_text(r.detail)}")
        else:
            out.append(f"not ok {n} {name}")
            what = f"expected {r.expected!r}, got {r.observed!r}" if r.status == FAIL else "error"
            out.append(f"# {what}")
            out += [f"# {line}" for line in r.detail.splitlines()]
    t = totals(results)
    out.append(
        f"# Totals: pass:{t[PASS]} fail:{t[FAIL]} xfail:0 xpass:0 skip:{t[SKIP]} error:{t[ERROR]}"
    )
    return "\n".join(out) + "\n"


# -- HTML ---------------------------------------------------------------------------------


def colour(label: str) -> str:
    """A stable pastel colour per label (reserved verdicts in greys)."""
    if label in RESERVED_COLOURS:
        return RESERVED_COLOURS[label]
    return f"hsl({zlib.crc32(label.encode()) % 360}, 65%, 78%)"


def prefix_view(
    res: ScenarioResult,
) -> dict[tuple[str, int], list[tuple[str, list[tuple[int, int, str, bool]]]]]:
    """Who owns which part of the address space, per (proto, port) and prefix.

    Returns ``{(proto, port): [(prefix, [(first, last, label, all_ok), ...]), ...]}``: each
    probed destination owns the addresses from it up to the next probed one (the first also
    those below it), merged while the observed label stays the same.
    """
    nets = [ipaddress.ip_network(p) for p in res.prefixes]
    probed: dict[tuple[str, int], dict[Any, list[tuple[int, Row]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in res.rows:
        if r.kind != "flow" or not r.observed:
            continue
        try:
            f = Flow.parse(r.name)
        except ValueError:  # a results file may hold rows that are not flows
            continue
        net = next((n for n in nets if f.dst in n), None)
        if net is None:  # not in a known prefix: the /24 or /64 around it
            net = ipaddress.ip_network(f"{f.dst}/{24 if f.version == 4 else 64}", strict=False)
        probed[(f.proto, f.dport)][net].append((int(f.dst), r))
    view: dict[tuple[str, int], list[tuple[str, list[tuple[int, int, str, bool]]]]] = {}
    for key in sorted(probed):
        lines = []
        for net in sorted(probed[key], key=lambda n: (n.version, n)):
            spans: list[list[Any]] = []
            for addr, r in sorted(probed[key][net], key=lambda x: x[0]):
                if spans and spans[-1][2] == r.observed:
                    spans[-1][3] = spans[-1][3] and r.status == PASS
                    continue
                if spans:
                    spans[-1][1] = addr - 1
                spans.append([addr, addr, r.observed, r.status == PASS])
            spans[0][0] = int(net.network_address)
            spans[-1][1] = int(net.broadcast_address)
            lines.append((str(net), [(a, b, lbl, good) for a, b, lbl, good in spans]))
        view[key] = lines
    return view


CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table.matrix{border-collapse:collapse;margin:.5em 0}
.matrix td,.matrix th{border:1px solid #ccc;padding:2px 8px;text-align:left}
.matrix code{font-size:13px}tr.pass td.res{background:#d4f7d4}tr.fail td.res{background:#f7c6c6}
tr.skip td.res{background:#eee}tr.error td.res{background:#f7a8a8}
.claim{border-left:4px solid #88a;padding:.2em .8em;color:#444;margin:.5em 0}
.bar{display:flex;height:1.6em;border:1px solid #999;margin:2px 0 8px;max-width:60em}
.bar div{overflow:hidden;white-space:nowrap;font-size:12px;padding:0 3px;border-right:1px solid #fff;min-width:1.5em}
.bar div.mismatch{outline:2px solid #d00;outline-offset:-2px}.detail{white-space:pre;font-size:12px;color:#a00}.evidence{font-size:12px;color:#555}"""


def _e(text: Any) -> str:
    return _html.escape(str(text))


def _prefix_html(res: ScenarioResult) -> list[str]:
    out = []
    for (proto, port), lines in prefix_view(res).items():
        out.append(f"<h3>{_e(proto)} port {port}</h3>")
        for net, spans in lines:
            n = ipaddress.ip_network(net)
            size = n.num_addresses
            cells = []
            for a, b, label, good in spans:
                first, last = ipaddress.ip_address(a), ipaddress.ip_address(b)
                title = f"{first} - {last}: {label}" + ("" if good else " (not as expected)")
                cells.append(
                    f'<div class="{"" if good else "mismatch"}" style="flex:{(b - a + 1) / size:.6f};'
                    f'background:{colour(label)}" title="{_e(title)}">{_e(label)}</div>'
                )
            out.append(f'<div><code>{_e(net)}</code></div><div class="bar">{"".join(cells)}</div>')
    return out


def html(results: Results_, kernel: dict[str, Any] | None = None) -> str:
    """A self-contained page: the matrix per scenario and the per-prefix ownership view."""
    k = (
        f"kernel {_e(kernel.get('release', '?'))} ({_e(kernel.get('machine', '?'))})"
        if kernel
        else ""
    )
    body = [f"<h1>bindlab dispatch matrix</h1><p>{k}</p><p><b>{_e(summary(results))}</b></p>"]
    for res in results:
        body.append(
            f'<section id="{_e(res.name)}"><h2>{_e(res.name)}</h2><p><code>{_e(res.path)}</code></p>'
        )
        if res.claim:
            body.append(f'<p class="claim">{_e(res.claim)}<br><small>{_e(res.source)}</small></p>')
        body.append(
            '<table class="matrix"><tr><th>flow / socket steps</th><th>expected</th><th>observed</th><th>result</th></tr>'
        )
        for r in res.rows:
            detail = (
                f'<div class="detail">{_e(r.detail)}</div>' if r.detail and r.status != PASS else ""
            )
            if r.evidence:
                detail += f'<div class="evidence">kernel: {_e(r.evidence)}</div>'

            body.append(
                f'<tr class="{_e(r.status)}"><td><code>{_e(r.name)}</code>{detail}</td><td>{_e(r.expected)}</td>'
                f'<td>{_e(r.observed or "-")}</td><td class="res">{_e(SHOWN.get(r.status, r.status))}</td></tr>'
            )
        body.append("</table>")
        view = _prefix_html(res)
        if view:
            body.append(
                "<h3>address space by observed verdict</h3><p><small>Each probed address owns the addresses up to the next probed one.</small></p>"
            )
            body += view
        body.append("</section>")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>bindlab dispatch matrix</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


FORMATS: dict[str, Callable[[Results_, dict[str, Any] | None], str]] = {
    "table": table, "md": markdown, "json": to_json, "html": html, "ktap": ktap,
}  # fmt: skip


def render(fmt: str, results: Results_, kernel: dict[str, Any] | None = None) -> str:
    """Render ``results`` in format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; known: {', '.join(FORMATS)}")
    return FORMATS[fmt](results, kernel)


# -- from a results file ------------------------------------------------------------------


def from_results(results: Results) -> list[ScenarioResult]:
    """The rows of a :class:`~bindlab.results.Results` file, one group per test file."""
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
        for kind, name, expected in named:
            observed = t.verdicts.get(name, "")
            row = Row(kind, name, expected, observed, status, t.reason if status != PASS else "")
            row.evidence = t.evidence.get(name, "")
            groups[path].append(row)
    return [
        ScenarioResult(os.path.basename(p).rsplit(".", 1)[0], p, rows) for p, rows in groups.items()
    ]
