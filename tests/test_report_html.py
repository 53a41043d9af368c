"""The HTML report of a real run: it holds the matrix rows, and headless Chromium renders it."""

from __future__ import annotations

import html
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from bindlab import report
from bindlab.scenario.load import load
from bindlab.scenario.run import run

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "fixtures" / "scenarios" / "specific_vs_wildcard.toml"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


@pytest.fixture(scope="module")
def page() -> tuple[str, list]:
    """The HTML of one real scenario run, and its results."""
    results = [run(load(SCENARIO))]
    return report.html(results, {"release": "test", "machine": "x86_64"}), results


@pytest.mark.privileged
def test_the_page_holds_every_row_and_the_prefix_view(page) -> None:
    text, results = page
    assert (
        text.startswith("<!DOCTYPE html>")
        and "<script" not in text
        and "http" not in text.split("<body>")[1]
    )
    for r in results[0].rows:
        row = (
            f"<td><code>{html.escape(r.name)}</code></td><td>{html.escape(r.expected)}</td>"
            f'<td>{html.escape(r.observed)}</td><td class="res">ok</td>'
        )
        assert row in text, r.name
    assert "<h3>tcp port 80</h3>" in text and "<code>192.0.2.0/24</code>" in text
    # each probed address owns the addresses up to the next probed one (the first, those below)
    assert 'title="192.0.2.0 - 192.0.2.19: spec"' in text
    assert 'title="192.0.2.20 - 192.0.2.255: wild"' in text


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.privileged
def test_headless_chromium_renders_it(page, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (apt install chromium)")
    src, png = tmp_path / "report.html", tmp_path / "report.png"
    src.write_text(page[0])
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={png}", "--window-size=1200,1600", src.as_uri()]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.exists(), f"no screenshot; chromium exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    data = png.read_bytes()
    assert _png_size(data) == (1200, 1600)
    assert len(data) > 20_000  # a blank page compresses to a few KiB; the matrix does not
