"""The HTML report: one self-contained page a person can read a failing run from.

Scenarios with failures come first, and in each scenario the failed and errored rows come
first, packets beneath; passing and skipped rows are collapsed (``<details>``). A text
filter (also read from the page address, ``report.html#filter=192.0.2.7``) hides the rows
that do not match. The address-space view shows only what was probed: each declared prefix
as a bar with a mark per probed destination, and the verdicts each destination got; a
destination whose flows went to several sockets is one SO_REUSEPORT group, not a split. Rows
that carry the kernel's evidence (``Row.evidence``, runs with evidence on) get a column.
"""

from __future__ import annotations

import html as _html
import zlib
from typing import Any

from bindlab.report import addrspace
from bindlab.report.common import (
    SHOWN,
    Kernel,
    Results_,
    failures_first,
    one_reason,
    status_of,
    summary,
)
from bindlab.results import ERROR, FAIL, PASS, SKIP, Row, ScenarioResult

RESERVED_COLOURS = {"RST": "#c8c8c8", "ICMP": "#e2e2e2", "NONE": "#ffffff", "UNLABELLED": "#f4d03f"}
ORDER = {FAIL: 0, ERROR: 1, PASS: 2, SKIP: 3}

CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:90em}
h1{font-size:1.5em;margin:0}h2{font-size:1.15em;margin:1.6em 0 .3em;border-bottom:1px solid #ccc}
h3{font-size:1em;margin:.8em 0 .2em}h4{font-size:.95em;margin:.6em 0 .1em}
.top{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd;z-index:1}
#filter{font:inherit;width:32em;padding:3px 6px}#shown{color:#666;margin-left:1em}
table.matrix{border-collapse:collapse;margin:.4em 0}
.matrix td,.matrix th{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}
.matrix code{font-size:13px}tr.pass td.res{background:#d4f7d4}tr.fail td.res{background:#f7c6c6}
tr.skip td.res{background:#eee}tr.error td.res{background:#f7a8a8}
.badge{display:inline-block;padding:0 .5em;border-radius:3px;font-size:.85em;margin-right:.4em}
.badge.pass{background:#d4f7d4}.badge.fail{background:#f7c6c6}.badge.error{background:#f7a8a8}.badge.skip{background:#eee}
.claim{border-left:4px solid #88a;padding:.2em .8em;color:#444;margin:.5em 0}
.detail{white-space:pre;font-size:12px;color:#a00;margin-top:2px}
details>summary{cursor:pointer;color:#555}
.bar{position:relative;height:1.4em;border:1px solid #999;margin:2px 0 4px;max-width:60em;
background:repeating-linear-gradient(45deg,#fafafa,#fafafa 6px,#f0f0f0 6px,#f0f0f0 12px)}
.pt{position:absolute;top:-1px;bottom:-1px;width:7px;margin-left:-3px;border:1px solid #333}
.pt.mismatch{border:2px solid #d00}.points{margin:0 0 .6em;padding-left:1.2em}
.lbl{display:inline-block;padding:0 .4em;border:1px solid #bbb;border-radius:3px;margin-right:.2em}
.note{color:#666;font-size:.9em}.evidence{font-size:12px;color:#555}"""

SCRIPT = """(function(){
var box=document.getElementById('filter'),shown=document.getElementById('shown');
function apply(){
 var q=box.value.trim().toLowerCase(),rows=document.querySelectorAll('tr.row'),n=0;
 rows.forEach(function(tr){var hit=!q||tr.textContent.toLowerCase().indexOf(q)>=0;
  tr.hidden=!hit;if(hit)n++;});
 document.querySelectorAll('section.scenario').forEach(function(s){
  var any=s.querySelector('tr.row:not([hidden])');s.hidden=!any;
  s.querySelectorAll('details.rows').forEach(function(d){
   if(q)d.open=!!d.querySelector('tr.row:not([hidden])');});});
 shown.textContent=q?n+' of '+rows.length+' rows match':rows.length+' rows';
}
box.addEventListener('input',apply);
var m=/[#&]filter=([^&]*)/.exec(location.hash);
if(m)box.value=decodeURIComponent(m[1]);
apply();
})();"""


def colour(label: str) -> str:
    """A stable pastel colour per label (reserved verdicts in greys)."""
    if label in RESERVED_COLOURS:
        return RESERVED_COLOURS[label]
    return f"hsl({zlib.crc32(label.encode()) % 360}, 65%, 78%)"


def _e(text: Any) -> str:
    return _html.escape(str(text))


def _evidence(r: Row) -> str:
    return r.evidence or ""


def _row(r: Row, evidence: bool) -> str:
    detail = f'<div class="detail">{_e(r.detail)}</div>' if r.detail and r.status != PASS else ""
    ev = f'<td class="evidence">{_e(_evidence(r))}</td>' if evidence else ""
    return (
        f'<tr class="row {_e(r.status)}"><td><code>{_e(r.name)}</code>{detail}</td>'
        f"<td>{_e(r.expected)}</td><td>{_e(r.observed or '-')}</td>"
        f'<td class="res">{_e(SHOWN.get(r.status, r.status))}</td>{ev}</tr>'
    )


def _table(rows: list[Row], evidence: bool) -> str:
    head = "<th>flow / socket steps</th><th>expected</th><th>observed</th><th>result</th>"
    head += "<th>evidence</th>" if evidence else ""
    body = "".join(_row(r, evidence) for r in rows)
    return f'<table class="matrix"><tr>{head}</tr>{body}</table>'


def _label(lbl: str, n: int) -> str:
    return f'<span class="lbl" style="background:{colour(lbl)}">{_e(lbl)}</span>&times;{n}'


def _point_title(p: addrspace.Point) -> str:
    got = ", ".join(f"{lbl} x{n}" for lbl, n in p.verdicts.most_common())
    group = f" (reuseport group {'|'.join(sorted(p.members))})" if p.group else ""
    return f"{p.addr}: {got}{group}" + ("" if p.ok else " (not as expected)")


def _space_html(res: ScenarioResult) -> list[str]:
    out = []
    for (proto, port), spaces in addrspace.view(res).items():
        out.append(f"<h4>{_e(proto)} port {port}</h4>")
        for sp in spaces:
            where = (
                f"<code>{_e(sp.prefix)}</code> (declared)"
                if sp.prefix
                else "outside the declared prefixes"
            )
            out.append(f"<div>{where}: {len(sp.points)} address(es) probed</div>")
            if sp.prefix is not None:
                marks = []
                for p in sp.points:
                    stops = _stripes(p)
                    cls = "pt" if p.ok else "pt mismatch"
                    marks.append(
                        f'<span class="{cls}" style="left:{100 * sp.offset(p):.4f}%;background:{stops}" '
                        f'title="{_e(_point_title(p))}"></span>'
                    )
                out.append(f'<div class="bar">{"".join(marks)}</div>')
            items = []
            for p in sp.points:
                labels = " ".join(_label(lbl, n) for lbl, n in p.verdicts.most_common())
                group = (
                    f' <em class="note">reuseport group {_e(", ".join(sorted(p.members)))}: '
                    "one destination, the member picked by hash</em>"
                    if p.group
                    else ""
                )
                bad = ' <b style="color:#d00">not as expected</b>' if not p.ok else ""
                items.append(f"<li><code>{_e(p.addr)}</code> {labels}{group}{bad}</li>")
            out.append(f'<ul class="points">{"".join(items)}</ul>')
    return out


def _stripes(p: addrspace.Point) -> str:
    """One colour, or a gradient with a band per label of a group."""
    labels = [lbl for lbl, _ in p.verdicts.most_common()]
    if len(labels) == 1:
        return colour(labels[0])
    step = 100 / len(labels)
    bands = [f"{colour(lbl)} {i * step:.1f}% {(i + 1) * step:.1f}%" for i, lbl in enumerate(labels)]
    return f"linear-gradient({', '.join(bands)})"


def _section(res: ScenarioResult, evidence: bool) -> list[str]:
    st = status_of(res)
    out = [
        f'<section class="scenario {st}" id="{_e(res.name)}" data-status="{st}">',
        f'<h2><span class="badge {st}">{_e(SHOWN.get(st, st))}</span>{_e(res.name)}</h2>',
        f"<p><code>{_e(res.path)}</code></p>",
    ]
    if res.claim:
        out.append(f'<p class="claim">{_e(res.claim)}<br><small>{_e(res.source)}</small></p>')
    if (shared := one_reason(res)) is not None:
        out.append(f'<p class="note">{_e(res.rows[0].status)}: {_e(shared)}</p>')
    rows = failures_first(res.rows)
    bad = [r for r in rows if r.status in (FAIL, ERROR)]
    rest = rows[len(bad) :]
    if bad:
        out.append(_table(bad, evidence))
    if rest:
        n_pass, n_skip = sum(r.status == PASS for r in rest), sum(r.status == SKIP for r in rest)
        what = ", ".join(
            x
            for x in (f"{n_pass} passing" if n_pass else "", f"{n_skip} skipped" if n_skip else "")
            if x
        )
        out.append(
            f'<details class="rows"><summary>{what} row(s)</summary>{_table(rest, evidence)}</details>'
        )
    space = _space_html(res)
    if space:
        out.append(
            '<h3>address space: what was probed</h3><p class="note">Marks are the probed '
            "destinations; the kernel was not asked about the addresses between them.</p>"
        )
        out += space
    out.append("</section>")
    return out


def html(results: Results_, kernel: Kernel = None) -> str:
    """A self-contained page: failures first, passing rows collapsed, a filter, and the
    probed address space per scenario."""
    k = (
        f"kernel {_e(kernel.get('release', '?'))} ({_e(kernel.get('machine', '?'))})"
        if kernel
        else ""
    )
    evidence = any(_evidence(r) for res in results for r in res.rows)
    ordered = sorted(results, key=lambda res: ORDER.get(status_of(res), 9))
    body = [
        '<div class="top"><h1>bindlab dispatch matrix</h1>'
        f"<div>{k} &middot; <b>{_e(summary(results))}</b></div>"
        '<label>filter <input id="filter" type="search" placeholder="flow, address, label, status" '
        'autocomplete="off"></label><span id="shown"></span></div>'
    ]
    for res in ordered:
        body += _section(res, evidence)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>bindlab dispatch matrix</title>"
        f"<style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
