"""The HTML report of real runs, rendered by headless Chromium: failures first, passing rows
collapsed, a filter that works, and an address-space view of only what was probed."""

from __future__ import annotations

import html
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from bindlab import report
from bindlab.results import Row, ScenarioResult
from bindlab.scenario.load import load
from bindlab.scenario.run import run

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "fixtures" / "scenarios"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
# specific_vs_wildcard with one expectation turned wrong: a failing scenario
WRONG = [
    ('"tcp 198.18.0.1:40001 -> 192.0.2.20:80" = "wild"', '"tcp 198.18.0.1:40001 -> 192.0.2.20:80" = "spec"'),
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[ScenarioResult]:
    """Real runs: the reuseport scenario (passes), and a failing copy of another."""
    text = (SCENARIOS / "specific_vs_wildcard.toml").read_text()
    for old, new in WRONG:
        assert old in text, old
        text = text.replace(old, new)
    wrong = tmp_path_factory.mktemp("html") / "wrong_expectations.toml"
    wrong.write_text(text)
    return [run(load(SCENARIOS / "reuseport.toml")), run(load(wrong))]


@pytest.fixture(scope="module")
def page(runs: list[ScenarioResult]) -> str:
    return report.html(runs, {"release": "test", "machine": "x86_64"})


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium not installed (apt install chromium; ci/run test installs it)")
    return path


def browse(tmp_path: Path, text: str, *args: str, fragment: str = "") -> str:
    """Run headless Chromium on the page with ``args``; its stdout."""
    src = tmp_path / "report.html"
    src.write_text(text)
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args,
           src.as_uri() + fragment]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    return proc.stdout


def sections(dom: str) -> list[tuple[str, str, bool]]:
    """(id, status, hidden) of each scenario section, in page order."""
    return [
        (m["id"], m["st"], m["hidden"] is not None)
        for m in re.finditer(
            r'<section class="scenario (?P<st>\w+)" id="(?P<id>[^"]+)"[^>]*?(?P<hidden> hidden="")?>',
            dom,
        )
    ]


def visible_rows(dom: str) -> list[str]:
    return re.findall(r'<tr class="row \w+"><td><code>([^<]+)</code>', dom)


@pytest.mark.privileged
def test_failures_come_first_and_passing_rows_are_collapsed(runs, page) -> None:
    reuse, wrong = runs
    assert reuse.ok and not wrong.ok
    ids = [m for m in re.findall(r'<section class="scenario (\w+)" id="([^"]+)"', page)]
    assert ids == [("fail", "specific_vs_wildcard"), ("pass", "reuseport")]
    failing = page.split('id="specific_vs_wildcard"')[1].split("</section>")[0]
    first_table, rest = failing.split("<details", 1)
    bad = [r for r in wrong.rows if r.status == "fail"]
    assert re.findall(r"<code>([^<]+)</code><div", first_table) == [
        html.escape(r.name) for r in bad
    ]
    assert (
        '<div class="detail">-&gt; IP / TCP 198.18.0.1:40001 &gt; 192.0.2.20:http S' in first_table
    )
    n_ok = sum(r.status == "pass" for r in wrong.rows)
    assert f'<details class="rows"><summary>{n_ok} passing row(s)</summary>' in "<details" + rest
    passing = page.split('id="reuseport"')[1].split("</section>")[0]
    assert '<table class="matrix">' not in passing.split("<details")[0]  # nothing failed


@pytest.mark.privileged
def test_the_reuseport_group_is_one_probed_point_not_an_address_split(page) -> None:
    reuse = page.split('id="reuseport"')[1].split("</section>")[0]
    space = reuse.split("address space: what was probed")[1]
    # every flow went to 192.0.2.10: one point in the declared /24, nothing extrapolated
    assert re.findall(r"(\d+\.\d+\.\d+\.\d+) - ", space) == []
    tcp80 = space.split("<h4>tcp port 80</h4>")[1].split("<h4>")[0]
    assert "<code>192.0.2.0/24</code> (declared): 1 address(es) probed" in tcp80
    assert tcp80.count('class="pt') == 1
    assert re.search(
        r'title="192\.0\.2\.10: r\d x\d(, r\d x\d)? \(reuseport group r1\|r2\)"', tcp80
    )
    assert "reuseport group r1, r2: one destination, the member picked by hash" in tcp80


@pytest.mark.privileged
def test_headless_chromium_shows_failures_first_and_the_filter_works(page, tmp_path) -> None:
    dom = browse(tmp_path, page, "--dump-dom")
    assert [s[:2] for s in sections(dom)] == [
        ("specific_vs_wildcard", "fail"),
        ("reuseport", "pass"),
    ]
    assert re.search(r'<span id="shown">\d+ rows</span>', dom)
    # the filter, from the page address as a person would share it
    dom = browse(tmp_path, page, "--dump-dom", fragment="#filter=192.0.2.10:53")
    shown = [
        r
        for r in re.findall(r'<tr class="row \w+"( hidden="")?><td><code>([^<]+)<', dom)
        if not r[0]
    ]
    assert shown and all("192.0.2.10:53" in name for _, name in shown), shown
    assert [s[2] for s in sections(dom)] == [False, False]  # both have a UDP port-53 row
    assert re.search(r'<span id="shown">(\d+) of \d+ rows match</span>', dom)
    assert '<details class="rows" open="">' in dom  # a match inside collapsed rows opens them
    dom = browse(tmp_path, page, "--dump-dom", fragment="#filter=udp-wild")
    assert [s[2] for s in sections(dom)] == [False, True]  # only the failing scenario has it


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.privileged
def test_headless_chromium_screenshot(page, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    browse(tmp_path, page, f"--screenshot={png}", "--window-size=1200,1400")
    data = png.read_bytes()
    assert _png_size(data) == (1200, 1400)
    assert len(data) > 20_000  # a blank page compresses to a few KiB; the matrix does not
    keep = ROOT / "results" / "report-screenshot.png"
    if keep.parent.is_dir():  # for a person to look at after ci/run test
        shutil.copy(png, keep)


def test_an_evidence_column_appears_when_rows_carry_evidence() -> None:
    row = Row("flow", "tcp 198.18.0.1:1 -> 192.0.2.1:80", "a", "a", "pass")
    plain = report.html([ScenarioResult("s", "s.toml", [row])])
    assert "<th>evidence</th>" not in plain
    row.evidence = "sk_lookup: prog 7 -> sk a"
    page = report.html([ScenarioResult("s", "s.toml", [row])])
    assert "<th>evidence</th>" in page
    assert '<td class="evidence">sk_lookup: prog 7 -&gt; sk a</td>' in page
